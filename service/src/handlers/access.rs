use orgadmin_domain::Domain;
use orgadmin_domain::services::access::{LevelFilter, LevelGrant};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::access_service_server::AccessService;
use tonic::{Request, Response, Status};

use super::caller;
use crate::convert::*;
use crate::error::IntoStatus;

pub struct AccessHandler {
    pub domain: Domain,
}

fn admin_level_to_pb(grant: LevelGrant) -> pb::AdminLevel {
    pb::AdminLevel {
        id: grant.id.to_string(),
        organisation_id: grant.organisation_id.to_string(),
        user_id: grant.user_id.to_string(),
        level: i32::from(grant.level),
        unit_id: grant.unit_id.map(|u| u.to_string()).unwrap_or_default(),
        granted_by: grant.granted_by,
        grant_time: Some(timestamp(grant.granted_at)),
    }
}

#[tonic::async_trait]
impl AccessService for AccessHandler {
    async fn grant_admin_level(
        &self,
        request: Request<pb::GrantAdminLevelRequest>,
    ) -> Result<Response<pb::GrantAdminLevelResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("user_id", &r.user_id).into_status()?;
        let unit_id = opt_id("unit_id", &r.unit_id).into_status()?;
        let grant = self
            .domain
            .grant_admin_level(&caller, user_id, r.level, unit_id)
            .await
            .into_status()?;
        Ok(Response::new(pb::GrantAdminLevelResponse {
            admin_level: Some(admin_level_to_pb(grant)),
        }))
    }

    async fn list_admin_levels(
        &self,
        request: Request<pb::ListAdminLevelsRequest>,
    ) -> Result<Response<pb::ListAdminLevelsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let filter = LevelFilter {
            user_id: opt_id("user_id", &r.user_id).into_status()?,
            unit_id: opt_id("unit_id", &r.unit_id).into_status()?,
        };
        let page = self
            .domain
            .list_admin_levels(&caller, organisation_id, filter, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListAdminLevelsResponse {
            admin_levels: page.items.into_iter().map(admin_level_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn revoke_admin_level(
        &self,
        request: Request<pb::RevokeAdminLevelRequest>,
    ) -> Result<Response<pb::RevokeAdminLevelResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let level_id = id("id", &request.get_ref().id).into_status()?;
        let grant = self.domain.revoke_admin_level(&caller, level_id).await.into_status()?;
        Ok(Response::new(pb::RevokeAdminLevelResponse {
            admin_level: Some(admin_level_to_pb(grant)),
        }))
    }
}
