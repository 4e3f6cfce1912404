use orgadmin_domain::Domain;
use orgadmin_domain::model::{self, Organisation};
use orgadmin_domain::services::organisations::{NewOrganisation, NewUnit, OrganisationPatch, SettingsPatch, UnitPatch};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::organisation_service_server::OrganisationService;
use tonic::{Request, Response, Status};

use super::caller;
use crate::convert::*;
use crate::error::IntoStatus;

pub struct OrganisationHandler {
    pub domain: Domain,
}

pub fn organisation_to_pb(org: &Organisation) -> pb::Organisation {
    pb::Organisation {
        id: org.id.to_string(),
        name: org.name.clone(),
        cvr: org.cvr.clone(),
        ean_numbers: org.ean_numbers.clone(),
        etag: org.version.to_string(),
        create_time: Some(timestamp(org.created_at)),
        update_time: Some(timestamp(org.updated_at)),
        licences_used: org.licences_used as i32,
        licence_count: org.settings.licence_count,
    }
}

fn settings_to_pb(org: &Organisation) -> pb::OrganisationSettings {
    let s = &org.settings;
    pb::OrganisationSettings {
        organisation_id: org.id.to_string(),
        allowed_identification_means: identification_means_to_pb(&s.allowed_identification_means),
        join_requests_allowed: s.join_requests_allowed,
        certificate_kinds: certificate_kinds_to_pb(&s.certificate_kinds),
        deletion_policy: deletion_policy_to_pb(s.deletion_policy) as i32,
        max_administrators: s.max_administrators,
        licence_count: s.licence_count,
        billing: Some(pb::BillingDetails {
            name: s.billing.name.clone(),
            address: s.billing.address.clone(),
            email: s.billing.email.clone(),
            reference: s.billing.reference.clone(),
        }),
        etag: org.version.to_string(),
        second_factor_required: s.second_factor_required,
    }
}

fn unit_to_pb(unit: &model::Unit) -> pb::Unit {
    pb::Unit {
        id: unit.id.to_string(),
        organisation_id: unit.organisation_id.to_string(),
        parent_id: unit.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        kind: unit_kind_to_pb(unit.kind) as i32,
        name: unit.name.clone(),
        number: unit.number.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl OrganisationService for OrganisationHandler {
    async fn create_organisation(
        &self,
        request: Request<pb::CreateOrganisationRequest>,
    ) -> Result<Response<pb::CreateOrganisationResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let new = NewOrganisation {
            name: r.name,
            cvr: r.cvr,
            ean_numbers: r.ean_numbers,
            licence_count: r.licence_count,
            max_administrators: r.max_administrators,
            deletion_policy: deletion_policy("deletion_policy", r.deletion_policy).into_status()?,
            request_id: opt_string(r.request_id),
        };
        let org = self.domain.create_organisation(&caller, new).await.into_status()?;
        Ok(Response::new(pb::CreateOrganisationResponse {
            organisation: Some(organisation_to_pb(&org)),
        }))
    }

    async fn get_organisation(
        &self,
        request: Request<pb::GetOrganisationRequest>,
    ) -> Result<Response<pb::GetOrganisationResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let id = id("id", &request.get_ref().id).into_status()?;
        let org = self.domain.get_organisation(&caller, id).await.into_status()?;
        Ok(Response::new(pb::GetOrganisationResponse {
            organisation: Some(organisation_to_pb(&org)),
        }))
    }

    async fn list_organisations(
        &self,
        request: Request<pb::ListOrganisationsRequest>,
    ) -> Result<Response<pb::ListOrganisationsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let page = self
            .domain
            .list_organisations(&caller, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListOrganisationsResponse {
            organisations: page.items.iter().map(organisation_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_organisation(
        &self,
        request: Request<pb::UpdateOrganisationRequest>,
    ) -> Result<Response<pb::UpdateOrganisationResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let org = r.organisation.unwrap_or_default();
        let id = id("organisation.id", &org.id).into_status()?;
        let paths = mask_paths(r.update_mask.as_ref(), &["name", "ean_numbers"]).into_status()?;
        let mut patch = OrganisationPatch::default();
        for path in paths {
            match path.as_str() {
                "name" => patch.name = Some(org.name.clone()),
                _ => patch.ean_numbers = Some(org.ean_numbers.clone()),
            }
        }
        let updated = self
            .domain
            .update_organisation(&caller, id, &org.etag, patch)
            .await
            .into_status()?;
        Ok(Response::new(pb::UpdateOrganisationResponse {
            organisation: Some(organisation_to_pb(&updated)),
        }))
    }

    async fn get_organisation_settings(
        &self,
        request: Request<pb::GetOrganisationSettingsRequest>,
    ) -> Result<Response<pb::GetOrganisationSettingsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let id = id("organisation_id", &request.get_ref().organisation_id).into_status()?;
        let org = self.domain.get_settings(&caller, id).await.into_status()?;
        Ok(Response::new(pb::GetOrganisationSettingsResponse {
            settings: Some(settings_to_pb(&org)),
        }))
    }

    async fn update_organisation_settings(
        &self,
        request: Request<pb::UpdateOrganisationSettingsRequest>,
    ) -> Result<Response<pb::UpdateOrganisationSettingsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let s = r.settings.unwrap_or_default();
        let id = id("settings.organisation_id", &s.organisation_id).into_status()?;
        let paths = mask_paths(
            r.update_mask.as_ref(),
            &[
                "allowed_identification_means",
                "join_requests_allowed",
                "certificate_kinds",
                "deletion_policy",
                "max_administrators",
                "billing",
                "second_factor_required",
            ],
        )
        .into_status()?;
        let mut patch = SettingsPatch::default();
        for path in paths {
            match path.as_str() {
                "allowed_identification_means" => {
                    patch.allowed_identification_means = Some(
                        identification_means("settings.allowed_identification_means", &s.allowed_identification_means)
                            .into_status()?,
                    )
                }
                "join_requests_allowed" => patch.join_requests_allowed = Some(s.join_requests_allowed),
                "certificate_kinds" => {
                    patch.certificate_kinds =
                        Some(certificate_kinds("settings.certificate_kinds", &s.certificate_kinds).into_status()?)
                }
                "deletion_policy" => {
                    patch.deletion_policy = Some(
                        deletion_policy("settings.deletion_policy", s.deletion_policy)
                            .and_then(|p| {
                                p.ok_or_else(|| {
                                    orgadmin_domain::DomainError::invalid(
                                        "settings.deletion_policy",
                                        "must not be DELETION_POLICY_UNSPECIFIED",
                                    )
                                })
                            })
                            .into_status()?,
                    )
                }
                "max_administrators" => patch.max_administrators = Some(s.max_administrators),
                "second_factor_required" => patch.second_factor_required = Some(s.second_factor_required),
                _ => {
                    let b = s.billing.clone().unwrap_or_default();
                    patch.billing = Some(model::BillingDetails {
                        name: b.name,
                        address: b.address,
                        email: b.email,
                        reference: b.reference,
                    })
                }
            }
        }
        let org = self
            .domain
            .update_settings(&caller, id, &s.etag, patch)
            .await
            .into_status()?;
        Ok(Response::new(pb::UpdateOrganisationSettingsResponse {
            settings: Some(settings_to_pb(&org)),
        }))
    }

    async fn set_licence_count(
        &self,
        request: Request<pb::SetLicenceCountRequest>,
    ) -> Result<Response<pb::SetLicenceCountResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let id = id("organisation_id", &r.organisation_id).into_status()?;
        let org = self
            .domain
            .set_licence_count(&caller, id, r.licence_count)
            .await
            .into_status()?;
        Ok(Response::new(pb::SetLicenceCountResponse {
            organisation: Some(organisation_to_pb(&org)),
        }))
    }

    async fn create_unit(
        &self,
        request: Request<pb::CreateUnitRequest>,
    ) -> Result<Response<pb::CreateUnitResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let new = NewUnit {
            organisation_id: id("organisation_id", &r.organisation_id).into_status()?,
            parent_id: opt_id("parent_id", &r.parent_id).into_status()?,
            kind: unit_kind("kind", r.kind).into_status()?,
            name: r.name,
            number: opt_string(r.number),
            request_id: opt_string(r.request_id),
        };
        let unit = self.domain.create_unit(&caller, new).await.into_status()?;
        Ok(Response::new(pb::CreateUnitResponse {
            unit: Some(unit_to_pb(&unit)),
        }))
    }

    async fn list_units(
        &self,
        request: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let id = id("organisation_id", &request.get_ref().organisation_id).into_status()?;
        let units = self.domain.list_units(&caller, id).await.into_status()?;
        Ok(Response::new(pb::ListUnitsResponse {
            units: units.iter().map(unit_to_pb).collect(),
        }))
    }

    async fn update_unit(
        &self,
        request: Request<pb::UpdateUnitRequest>,
    ) -> Result<Response<pb::UpdateUnitResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let unit = r.unit.unwrap_or_default();
        let unit_id = id("unit.id", &unit.id).into_status()?;
        let paths = mask_paths(r.update_mask.as_ref(), &["name", "parent_id"]).into_status()?;
        let mut patch = UnitPatch::default();
        for path in paths {
            match path.as_str() {
                "name" => patch.name = Some(unit.name.clone()),
                _ => patch.parent_id = Some(opt_id("unit.parent_id", &unit.parent_id).into_status()?),
            }
        }
        let updated = self.domain.update_unit(&caller, unit_id, patch).await.into_status()?;
        Ok(Response::new(pb::UpdateUnitResponse {
            unit: Some(unit_to_pb(&updated)),
        }))
    }

    async fn delete_unit(
        &self,
        request: Request<pb::DeleteUnitRequest>,
    ) -> Result<Response<pb::DeleteUnitResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let unit_id = id("id", &request.get_ref().id).into_status()?;
        self.domain.delete_unit(&caller, unit_id).await.into_status()?;
        Ok(Response::new(pb::DeleteUnitResponse {}))
    }
}
