use std::pin::Pin;

use orgadmin_domain::Domain;
use orgadmin_domain::services::certificates::{Certificate, CertificateOrder, CertificateQuery, IssuedCertificate};
use orgadmin_domain::services::users::HistoryQuery;
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::certificate_service_server::CertificateService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::caller;
use super::users::event_to_pb;
use crate::convert::*;
use crate::error::IntoStatus;

pub struct CertificateHandler {
    pub domain: Domain,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub fn certificate_to_pb(c: Certificate) -> pb::Certificate {
    pb::Certificate {
        id: c.id.to_string(),
        organisation_id: c.organisation_id.to_string(),
        kind: certificate_kind_to_pb(c.kind) as i32,
        state: certificate_state_to_pb(c.state) as i32,
        holder_id: c.holder_id.map(|h| h.to_string()).unwrap_or_default(),
        contact_id: c.contact_id.to_string(),
        label: c.label.unwrap_or_default(),
        usages: c
            .usages
            .into_iter()
            .map(|u| certificate_usage_to_pb(u) as i32)
            .collect(),
        email: c.email.unwrap_or_default(),
        renews_id: c.renews_id.map(|r| r.to_string()).unwrap_or_default(),
        serial: c.serial.unwrap_or_default(),
        subject: c.subject.unwrap_or_default(),
        key_algorithm: c.key_algorithm.unwrap_or_default(),
        not_before: opt_timestamp(c.not_before),
        not_after: opt_timestamp(c.not_after),
        pickup_expire_time: opt_timestamp(c.pickup_expires_at),
        revoke_time: opt_timestamp(c.revoked_at),
        revocation_reason: c
            .revocation_reason
            .map_or(pb::RevocationReason::Unspecified, revocation_reason_to_pb) as i32,
        certificate_pem: c.pem.unwrap_or_default(),
        etag: c.version.to_string(),
        create_time: Some(timestamp(c.created_at)),
        update_time: Some(timestamp(c.updated_at)),
    }
}

fn issued_parts(issued: IssuedCertificate) -> (Option<pb::Certificate>, String, String) {
    (
        Some(certificate_to_pb(issued.certificate)),
        issued.certificate_pem,
        issued.chain_pem,
    )
}

#[tonic::async_trait]
impl CertificateService for CertificateHandler {
    async fn order_certificate(
        &self,
        request: Request<pb::OrderCertificateRequest>,
    ) -> Result<Response<pb::OrderCertificateResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let order = (|| {
            Ok::<_, orgadmin_domain::DomainError>(CertificateOrder {
                organisation_id: id("organisation_id", &r.organisation_id)?,
                kind: certificate_kind("kind", r.kind)?,
                holder_id: opt_id("holder_id", &r.holder_id)?,
                contact_id: opt_id("contact_id", &r.contact_id)?,
                label: opt_string(r.label.clone()),
                usages: r
                    .usages
                    .iter()
                    .enumerate()
                    .map(|(i, u)| certificate_usage(&format!("usages[{i}]"), *u))
                    .collect::<Result<_, _>>()?,
                email: opt_string(r.email.clone()),
                request_id: opt_string(r.request_id.clone()),
            })
        })()
        .into_status()?;
        let certificate = self.domain.order_certificate(&caller, order).await.into_status()?;
        Ok(Response::new(pb::OrderCertificateResponse {
            certificate: Some(certificate_to_pb(certificate)),
        }))
    }

    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let issued = self
            .domain
            .issue_certificate(&caller, &r.token, &r.csr_pem)
            .await
            .into_status()?;
        let (certificate, certificate_pem, chain_pem) = issued_parts(issued);
        Ok(Response::new(pb::IssueCertificateResponse {
            certificate,
            certificate_pem,
            chain_pem,
        }))
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::GetCertificateResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let certificate_id = id("certificate_id", &request.get_ref().certificate_id).into_status()?;
        let certificate = self
            .domain
            .get_certificate(&caller, certificate_id)
            .await
            .into_status()?;
        Ok(Response::new(pb::GetCertificateResponse {
            certificate: Some(certificate_to_pb(certificate)),
        }))
    }

    async fn search_certificates(
        &self,
        request: Request<pb::SearchCertificatesRequest>,
    ) -> Result<Response<pb::SearchCertificatesResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let query = (|| {
            Ok::<_, orgadmin_domain::DomainError>(CertificateQuery {
                organisation_id: id("organisation_id", &r.organisation_id)?,
                certificate_id: opt_id("certificate_id", &r.certificate_id)?,
                // Read as people type it by the domain (`canonical_serial`).
                serial: opt_string(r.serial.clone()),
                subject_text: opt_string(r.subject_text.clone()),
                holder_id: opt_id("holder_id", &r.holder_id)?,
                contact_id: opt_id("contact_id", &r.contact_id)?,
                email: opt_string(r.email.clone()),
                kind: if r.kind == 0 {
                    None
                } else {
                    Some(certificate_kind("kind", r.kind)?)
                },
                state: if r.state == 0 {
                    None
                } else {
                    Some(certificate_state("state", r.state)?)
                },
                usage: if r.usage == 0 {
                    None
                } else {
                    Some(certificate_usage("usage", r.usage)?)
                },
                expires_from: r
                    .expire_time_from
                    .as_ref()
                    .map(|t| millis("expire_time_from", t))
                    .transpose()?,
                expires_to: r
                    .expire_time_to
                    .as_ref()
                    .map(|t| millis("expire_time_to", t))
                    .transpose()?,
                page_size: r.page_size,
                page_token: r.page_token.clone(),
            })
        })()
        .into_status()?;
        let page = self.domain.search_certificates(&caller, query).await.into_status()?;
        Ok(Response::new(pb::SearchCertificatesResponse {
            certificates: page.items.into_iter().map(certificate_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_certificate_order(
        &self,
        request: Request<pb::DeleteCertificateOrderRequest>,
    ) -> Result<Response<pb::DeleteCertificateOrderResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let certificate_id = id("certificate_id", &request.get_ref().certificate_id).into_status()?;
        self.domain
            .delete_certificate_order(&caller, certificate_id)
            .await
            .into_status()?;
        Ok(Response::new(pb::DeleteCertificateOrderResponse {}))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let certificate_id = id("certificate_id", &r.certificate_id).into_status()?;
        let issued = self
            .domain
            .renew_certificate(&caller, certificate_id, &r.csr_pem)
            .await
            .into_status()?;
        let (certificate, certificate_pem, chain_pem) = issued_parts(issued);
        Ok(Response::new(pb::RenewCertificateResponse {
            certificate,
            certificate_pem,
            chain_pem,
        }))
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let (certificate_id, reason) = (|| {
            Ok::<_, orgadmin_domain::DomainError>((
                id("certificate_id", &r.certificate_id)?,
                revocation_reason("reason", r.reason)?,
            ))
        })()
        .into_status()?;
        let certificate = self
            .domain
            .revoke_certificate(&caller, certificate_id, reason, &r.etag)
            .await
            .into_status()?;
        Ok(Response::new(pb::RevokeCertificateResponse {
            certificate: Some(certificate_to_pb(certificate)),
        }))
    }

    async fn change_certificate_contact(
        &self,
        request: Request<pb::ChangeCertificateContactRequest>,
    ) -> Result<Response<pb::ChangeCertificateContactResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let (certificate_id, contact_id) = (|| {
            Ok::<_, orgadmin_domain::DomainError>((
                id("certificate_id", &r.certificate_id)?,
                id("contact_id", &r.contact_id)?,
            ))
        })()
        .into_status()?;
        let certificate = self
            .domain
            .change_certificate_contact(&caller, certificate_id, contact_id, &r.etag)
            .await
            .into_status()?;
        Ok(Response::new(pb::ChangeCertificateContactResponse {
            certificate: Some(certificate_to_pb(certificate)),
        }))
    }

    async fn list_certificate_history(
        &self,
        request: Request<pb::ListCertificateHistoryRequest>,
    ) -> Result<Response<pb::ListCertificateHistoryResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let certificate_id = id("certificate_id", &r.certificate_id).into_status()?;
        let page = self
            .domain
            .certificate_history(
                &caller,
                certificate_id,
                HistoryQuery {
                    page_size: r.page_size,
                    page_token: r.page_token,
                    start: None,
                    end: None,
                    activities: Vec::new(),
                },
            )
            .await
            .into_status()?;
        Ok(Response::new(pb::ListCertificateHistoryResponse {
            events: page.items.iter().map(event_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    type ExportCertificatesStream = BoxStream<pb::ExportCertificatesResponse>;

    async fn export_certificates(
        &self,
        request: Request<pb::ExportCertificatesRequest>,
    ) -> Result<Response<Self::ExportCertificatesStream>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let (organisation_id, format) = (|| {
            Ok::<_, orgadmin_domain::DomainError>((
                id("organisation_id", &r.organisation_id)?,
                export_format("format", r.format)?,
            ))
        })()
        .into_status()?;
        // The first chunk before the stream starts: a refusal is the call's
        // own error, not a broken stream.
        let first = self
            .domain
            .export_certificates_chunk(&caller, organisation_id, format, None)
            .await
            .into_status()?;
        let domain = self.domain.clone();
        let stream = super::pieces(
            first,
            move |cursor| {
                let (domain, caller) = (domain.clone(), caller.clone());
                async move {
                    domain
                        .export_certificates_chunk(&caller, organisation_id, format, Some(cursor))
                        .await
                }
            },
            |chunk| pb::ExportCertificatesResponse { chunk },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_organisation_signing(
        &self,
        request: Request<pb::SetOrganisationSigningRequest>,
    ) -> Result<Response<pb::SetOrganisationSigningResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("user_id", &r.user_id).into_status()?;
        let user = self
            .domain
            .set_organisation_signing(&caller, user_id, r.allowed, &r.etag)
            .await
            .into_status()?;
        Ok(Response::new(pb::SetOrganisationSigningResponse {
            user: Some(super::users::user_to_pb(user)),
        }))
    }

    async fn get_crl(&self, request: Request<pb::GetCrlRequest>) -> Result<Response<pb::GetCrlResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let crl = self.domain.crl_for(&caller).await.into_status()?;
        let ca = self.domain.certificate_authority();
        let chain = ca.map(|ca| ca.chain_pem().to_owned()).unwrap_or_default();
        let crl_url = ca.and_then(|ca| ca.crl_url()).unwrap_or_default().to_owned();
        let (send_der, send_pem) = crl_forms_that_fit(crl.der.len());
        Ok(Response::new(pb::GetCrlResponse {
            crl_number: crl.number,
            this_update: Some(timestamp(crl.this_update)),
            next_update: Some(timestamp(crl.next_update)),
            revoked_count: crl.revoked_count,
            crl_pem: if send_pem {
                orgadmin_domain::ca::pem("X509 CRL", &crl.der)
            } else {
                String::new()
            },
            crl_der: if send_der { crl.der } else { Vec::new() },
            ca_chain_pem: chain,
            crl_url,
        }))
    }
}

/// Which forms of a CRL of `der_bytes` GetCrl sends: both while they fit a
/// message (4 MiB) with room for the chain, DER alone up to 3 MiB, then
/// neither (the HTTP distribution point serves any size). Sent whole, a
/// CRL of some 36,000 revocations made the answer too large to send, and
/// GetCrl failed for everyone.
fn crl_forms_that_fit(der_bytes: usize) -> (bool, bool) {
    const MIB: usize = 1024 * 1024;
    (der_bytes <= 3 * MIB, der_bytes <= MIB)
}

#[cfg(test)]
mod tests {
    use super::crl_forms_that_fit;

    #[test]
    fn a_crl_is_sent_in_the_forms_that_fit_a_message() {
        assert_eq!(crl_forms_that_fit(2_000), (true, true));
        assert_eq!(crl_forms_that_fit(1024 * 1024), (true, true));
        assert_eq!(crl_forms_that_fit(1024 * 1024 + 1), (true, false));
        assert_eq!(crl_forms_that_fit(3 * 1024 * 1024 + 1), (false, false));
        // What is sent fits a message: DER, its PEM (4/3, with line
        // breaks) and a chain of a few KiB.
        for der in [1024 * 1024, 3 * 1024 * 1024] {
            let (send_der, send_pem) = crl_forms_that_fit(der);
            let pem = if send_pem { der * 4 / 3 + der / 48 + 64 } else { 0 };
            let sent = if send_der { der } else { 0 } + pem + 64 * 1024;
            assert!(sent < crate::server::MAX_MESSAGE_BYTES, "{der}: {sent}");
        }
    }
}
