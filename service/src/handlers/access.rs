use orgadmin_domain::model::GroupKind;
use orgadmin_domain::policy::Actions;
use orgadmin_domain::services::access::{
    GrantFilter, GrantedRight, Grantee, Group, GroupMember, LevelFilter, LevelGrant, NewGrant, NewGroup, Share,
    ShareFilter,
};
use orgadmin_domain::services::join_requests::{JoinRequest, JoinRequestState, NewJoinRequest};
use orgadmin_domain::services::rights_requests::{Requested, RightsRequest, RightsRequestState};
use orgadmin_domain::{Domain, DomainError};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::access_service_server::AccessService;
use tonic::{Request, Response, Status};

use super::caller;
use crate::convert::*;
use crate::error::IntoStatus;

pub struct AccessHandler {
    pub domain: Domain,
}

fn join_request_to_pb(request: JoinRequest) -> pb::JoinRequest {
    pb::JoinRequest {
        id: request.id.to_string(),
        organisation_id: request.organisation_id.to_string(),
        first_name: request.first_name,
        surname: request.surname,
        email: request.email,
        reason: request.reason,
        state: match request.state {
            // Never shown: unconfirmed requests are listed to nobody.
            JoinRequestState::Unconfirmed => pb::JoinRequestState::Unspecified,
            JoinRequestState::Open => pb::JoinRequestState::Open,
            JoinRequestState::Approved => pb::JoinRequestState::Approved,
            JoinRequestState::Rejected => pb::JoinRequestState::Rejected,
        } as i32,
        create_time: Some(timestamp(request.created_at)),
        confirm_time: opt_timestamp(request.confirmed_at),
        decided_by: request.decided_by.unwrap_or_default(),
        decide_time: opt_timestamp(request.decided_at),
        decision_note: request.decision_note.unwrap_or_default(),
        user_id: request.user_id.map(|u| u.to_string()).unwrap_or_default(),
    }
}

fn group_to_pb(group: Group) -> pb::Group {
    pb::Group {
        id: group.id.to_string(),
        organisation_id: group.organisation_id.to_string(),
        kind: match group.kind {
            GroupKind::Custom => pb::GroupKind::Custom,
            GroupKind::System => pb::GroupKind::System,
        } as i32,
        name: group.name,
        description: group.description,
        unit_id: group.unit_id.map(|u| u.to_string()).unwrap_or_default(),
        created_by: group.created_by,
        create_time: Some(timestamp(group.created_at)),
    }
}

fn group_member_to_pb(member: GroupMember) -> pb::GroupMember {
    pb::GroupMember {
        user_id: member.user_id.to_string(),
        first_name: member.first_name,
        surname: member.surname,
        organisation_id: member.organisation_id.to_string(),
        organisation_name: member.organisation_name,
        unit_id: member.unit_id.map(|u| u.to_string()).unwrap_or_default(),
        unit_name: member.unit_name,
        external: member.external,
        added_by: member.added_by,
        add_time: opt_timestamp(member.added_at),
    }
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

fn share_to_pb(share: Share) -> pb::Share {
    pb::Share {
        id: share.id.to_string(),
        organisation_id: share.organisation_id.to_string(),
        owner_user_id: share.owner_id.to_string(),
        grantee_user_id: share.grantee_id.to_string(),
        access: if share.may_edit {
            pb::ShareAccessLevel::Edit
        } else {
            pb::ShareAccessLevel::Read
        } as i32,
        shared_by: share.shared_by,
        share_time: Some(timestamp(share.shared_at)),
    }
}

/// A list of GrantAction values at `field`: READ and EDIT, each once.
fn actions_from_pb(field: &str, values: &[i32]) -> Result<Actions, DomainError> {
    let mut actions = Actions::default();
    for (i, value) in values.iter().enumerate() {
        let slot = match pb::GrantAction::try_from(*value) {
            Ok(pb::GrantAction::Read) => &mut actions.read,
            Ok(pb::GrantAction::Edit) => &mut actions.edit,
            _ => {
                return Err(DomainError::invalid(
                    format!("{field}[{i}]"),
                    "must be GRANT_ACTION_READ or GRANT_ACTION_EDIT",
                ));
            }
        };
        if *slot {
            return Err(DomainError::invalid(format!("{field}[{i}]"), "is named twice"));
        }
        *slot = true;
    }
    Ok(actions)
}

fn actions_to_pb(actions: Actions) -> Vec<i32> {
    let mut out = Vec::new();
    if actions.read {
        out.push(pb::GrantAction::Read as i32);
    }
    if actions.edit {
        out.push(pb::GrantAction::Edit as i32);
    }
    out
}

fn grant_to_pb(grant: GrantedRight) -> pb::Grant {
    let id = |u: Option<uuid::Uuid>| u.map(|u| u.to_string()).unwrap_or_default();
    pb::Grant {
        id: grant.id.to_string(),
        organisation_id: grant.organisation_id.to_string(),
        grantee_user_id: match grant.grantee {
            Grantee::User(user) => user.to_string(),
            Grantee::Group(_) => String::new(),
        },
        grantee_group_id: match grant.grantee {
            Grantee::Group(group) => group.to_string(),
            Grantee::User(_) => String::new(),
        },
        right: grant.right,
        unit_id: id(grant.unit_id),
        resource: grant.resource.unwrap_or_default(),
        actions: actions_to_pb(grant.actions),
        grantable_actions: actions_to_pb(grant.grantable),
        may_authorise: grant.may_authorise,
        parent_grant_id: id(grant.parent_id),
        granter_user_id: id(grant.granter_id),
        grant_time: Some(timestamp(grant.granted_at)),
    }
}

fn requested_from_pb(requested: Option<pb::request_rights_request::Requested>) -> Result<Requested, DomainError> {
    use pb::request_rights_request::Requested as Pb;
    match requested {
        Some(Pb::AdminLevel(level)) => Ok(Requested::AdminLevel {
            level: level.level,
            unit_id: opt_id("admin_level.unit_id", &level.unit_id)?,
        }),
        Some(Pb::Grant(grant)) => Ok(Requested::Grant {
            right: grant.right,
            actions: actions_from_pb("grant.actions", &grant.actions)?,
            unit_id: opt_id("grant.unit_id", &grant.unit_id)?,
        }),
        Some(Pb::Role(value)) => Ok(Requested::Role(role("role", value)?)),
        None => Err(DomainError::invalid(
            "requested",
            "name an admin_level, a grant or a role",
        )),
    }
}

fn rights_request_to_pb(request: RightsRequest) -> pb::RightsRequest {
    use pb::rights_request::Requested as Pb;
    let id = |u: Option<uuid::Uuid>| u.map(|u| u.to_string()).unwrap_or_default();
    pb::RightsRequest {
        id: request.id.to_string(),
        organisation_id: request.organisation_id.to_string(),
        requester_user_id: request.requester_id.to_string(),
        requested: Some(match request.requested {
            Requested::AdminLevel { level, unit_id } => Pb::AdminLevel(pb::RequestedAdminLevel {
                level,
                unit_id: id(unit_id),
            }),
            Requested::Grant {
                right,
                actions,
                unit_id,
            } => Pb::Grant(pb::RequestedGrant {
                right,
                actions: actions_to_pb(actions),
                unit_id: id(unit_id),
            }),
            Requested::Role(role) => Pb::Role(role_to_pb(role) as i32),
        }),
        reason: request.reason,
        state: match request.state {
            RightsRequestState::Open => pb::RightsRequestState::Open,
            RightsRequestState::Approved => pb::RightsRequestState::Approved,
            RightsRequestState::Rejected => pb::RightsRequestState::Rejected,
        } as i32,
        create_time: Some(timestamp(request.created_at)),
        decided_by: request.decided_by.unwrap_or_default(),
        decide_time: opt_timestamp(request.decided_at),
        decision_note: request.decision_note.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl AccessService for AccessHandler {
    async fn request_rights(
        &self,
        request: Request<pb::RequestRightsRequest>,
    ) -> Result<Response<pb::RequestRightsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let requested = requested_from_pb(r.requested).into_status()?;
        let made = self
            .domain
            .request_rights(&caller, requested, &r.reason)
            .await
            .into_status()?;
        Ok(Response::new(pb::RequestRightsResponse {
            rights_request: Some(rights_request_to_pb(made)),
        }))
    }

    async fn list_rights_requests(
        &self,
        request: Request<pb::ListRightsRequestsRequest>,
    ) -> Result<Response<pb::ListRightsRequestsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let page = self
            .domain
            .list_rights_requests(&caller, organisation_id, r.open_only, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListRightsRequestsResponse {
            rights_requests: page.items.into_iter().map(rights_request_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn decide_rights_request(
        &self,
        request: Request<pb::DecideRightsRequestRequest>,
    ) -> Result<Response<pb::DecideRightsRequestResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let request_id = id("id", &r.id).into_status()?;
        let decided = self
            .domain
            .decide_rights_request(&caller, request_id, r.approve, &r.note)
            .await
            .into_status()?;
        Ok(Response::new(pb::DecideRightsRequestResponse {
            rights_request: Some(rights_request_to_pb(decided)),
        }))
    }

    async fn share_access(
        &self,
        request: Request<pb::ShareAccessRequest>,
    ) -> Result<Response<pb::ShareAccessResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let owner_id = id("owner_user_id", &r.owner_user_id).into_status()?;
        let grantee_id = id("grantee_user_id", &r.grantee_user_id).into_status()?;
        let may_edit = match pb::ShareAccessLevel::try_from(r.access) {
            Ok(pb::ShareAccessLevel::Read) => false,
            Ok(pb::ShareAccessLevel::Edit) => true,
            _ => {
                return Err(DomainError::invalid(
                    "access",
                    "must be SHARE_ACCESS_LEVEL_READ or SHARE_ACCESS_LEVEL_EDIT",
                ))
                .into_status();
            }
        };
        let share = self
            .domain
            .share_access(&caller, owner_id, grantee_id, may_edit)
            .await
            .into_status()?;
        Ok(Response::new(pb::ShareAccessResponse {
            share: Some(share_to_pb(share)),
        }))
    }

    async fn list_shares(
        &self,
        request: Request<pb::ListSharesRequest>,
    ) -> Result<Response<pb::ListSharesResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let filter = ShareFilter {
            owner_id: opt_id("owner_user_id", &r.owner_user_id).into_status()?,
            grantee_id: opt_id("grantee_user_id", &r.grantee_user_id).into_status()?,
        };
        let page = self
            .domain
            .list_shares(&caller, organisation_id, filter, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListSharesResponse {
            shares: page.items.into_iter().map(share_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn revoke_share(
        &self,
        request: Request<pb::RevokeShareRequest>,
    ) -> Result<Response<pb::RevokeShareResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let share_id = id("id", &request.get_ref().id).into_status()?;
        let share = self.domain.revoke_share(&caller, share_id).await.into_status()?;
        Ok(Response::new(pb::RevokeShareResponse {
            share: Some(share_to_pb(share)),
        }))
    }

    async fn create_grant(
        &self,
        request: Request<pb::CreateGrantRequest>,
    ) -> Result<Response<pb::CreateGrantResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let grantee = match (
            opt_id("grantee_user_id", &r.grantee_user_id).into_status()?,
            opt_id("grantee_group_id", &r.grantee_group_id).into_status()?,
        ) {
            (Some(user), None) => Grantee::User(user),
            (None, Some(group)) => Grantee::Group(group),
            _ => {
                return Err(DomainError::invalid(
                    "grantee_user_id",
                    "exactly one of grantee_user_id and grantee_group_id names who holds the grant",
                ))
                .into_status();
            }
        };
        let new = NewGrant {
            grantee,
            right: r.right,
            unit_id: opt_id("unit_id", &r.unit_id).into_status()?,
            resource: opt_string(r.resource),
            actions: actions_from_pb("actions", &r.actions).into_status()?,
            grantable: actions_from_pb("grantable_actions", &r.grantable_actions).into_status()?,
            may_authorise: r.may_authorise,
            request_id: opt_string(r.request_id),
        };
        let grant = self.domain.create_grant(&caller, new).await.into_status()?;
        Ok(Response::new(pb::CreateGrantResponse {
            grant: Some(grant_to_pb(grant)),
        }))
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let filter = GrantFilter {
            grantee_id: opt_id("grantee_user_id", &r.grantee_user_id).into_status()?,
            grantee_group_id: opt_id("grantee_group_id", &r.grantee_group_id).into_status()?,
            resource: opt_string(r.resource),
            unit_id: opt_id("unit_id", &r.unit_id).into_status()?,
            granter_id: opt_id("granter_user_id", &r.granter_user_id).into_status()?,
        };
        let page = self
            .domain
            .list_grants(&caller, organisation_id, filter, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: page.items.into_iter().map(grant_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let grant_id = id("id", &request.get_ref().id).into_status()?;
        let revoked = self.domain.revoke_grant(&caller, grant_id).await.into_status()?;
        Ok(Response::new(pb::RevokeGrantResponse {
            revoked: revoked.revoked.into_iter().map(grant_to_pb).collect(),
        }))
    }

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

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let new = NewGroup {
            organisation_id: id("organisation_id", &r.organisation_id).into_status()?,
            name: r.name,
            description: r.description,
        };
        let group = self.domain.create_group(&caller, new).await.into_status()?;
        Ok(Response::new(pb::CreateGroupResponse {
            group: Some(group_to_pb(group)),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let page = self
            .domain
            .list_groups(&caller, organisation_id, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups: page.items.into_iter().map(group_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let group_id = id("id", &request.get_ref().id).into_status()?;
        let group = self.domain.delete_group(&caller, group_id).await.into_status()?;
        Ok(Response::new(pb::DeleteGroupResponse {
            group: Some(group_to_pb(group)),
        }))
    }

    async fn add_group_member(
        &self,
        request: Request<pb::AddGroupMemberRequest>,
    ) -> Result<Response<pb::AddGroupMemberResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let group_id = id("group_id", &r.group_id).into_status()?;
        let user_id = id("user_id", &r.user_id).into_status()?;
        let cvr = opt_string(r.organisation_cvr);
        let member = self
            .domain
            .add_group_member(&caller, group_id, user_id, cvr.as_deref())
            .await
            .into_status()?;
        Ok(Response::new(pb::AddGroupMemberResponse {
            member: Some(group_member_to_pb(member)),
        }))
    }

    async fn remove_group_member(
        &self,
        request: Request<pb::RemoveGroupMemberRequest>,
    ) -> Result<Response<pb::RemoveGroupMemberResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let group_id = id("group_id", &r.group_id).into_status()?;
        let user_id = id("user_id", &r.user_id).into_status()?;
        self.domain
            .remove_group_member(&caller, group_id, user_id)
            .await
            .into_status()?;
        Ok(Response::new(pb::RemoveGroupMemberResponse {}))
    }

    async fn list_group_members(
        &self,
        request: Request<pb::ListGroupMembersRequest>,
    ) -> Result<Response<pb::ListGroupMembersResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let group_id = id("group_id", &r.group_id).into_status()?;
        let page = self
            .domain
            .list_group_members(&caller, group_id, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListGroupMembersResponse {
            members: page.items.into_iter().map(group_member_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn request_to_join(
        &self,
        request: Request<pb::RequestToJoinRequest>,
    ) -> Result<Response<pb::RequestToJoinResponse>, Status> {
        // No bearer token: anyone may ask; the link goes to the address.
        crate::bounds::check(request.get_ref()).into_status()?;
        let peer = super::peer(&self.domain, &request);
        let r = request.into_inner();
        self.domain
            .limit_sign_in_attempt("join", Some(&r.email), peer.as_deref())
            .into_status()?;
        let new = NewJoinRequest {
            organisation_cvr: r.organisation_cvr,
            first_name: r.first_name,
            surname: r.surname,
            email: r.email,
            birth_date: r.birth_date,
            language: language("language", r.language).into_status()?,
            reason: r.reason,
        };
        self.domain.request_to_join(new).await.into_status()?;
        Ok(Response::new(pb::RequestToJoinResponse {}))
    }

    async fn confirm_join_request(
        &self,
        request: Request<pb::ConfirmJoinRequestRequest>,
    ) -> Result<Response<pb::ConfirmJoinRequestResponse>, Status> {
        // No bearer token: the link's token is the proof.
        crate::bounds::check(request.get_ref()).into_status()?;
        let peer = super::peer(&self.domain, &request);
        self.domain
            .limit_sign_in_attempt("join-confirm", None, peer.as_deref())
            .into_status()?;
        let confirmed = self
            .domain
            .confirm_join_request(&request.get_ref().token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ConfirmJoinRequestResponse {
            join_request: Some(join_request_to_pb(confirmed)),
        }))
    }

    async fn list_join_requests(
        &self,
        request: Request<pb::ListJoinRequestsRequest>,
    ) -> Result<Response<pb::ListJoinRequestsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let organisation_id = id("organisation_id", &r.organisation_id).into_status()?;
        let page = self
            .domain
            .list_join_requests(&caller, organisation_id, r.open_only, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListJoinRequestsResponse {
            join_requests: page.items.into_iter().map(join_request_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn decide_join_request(
        &self,
        request: Request<pb::DecideJoinRequestRequest>,
    ) -> Result<Response<pb::DecideJoinRequestResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let request_id = id("id", &r.id).into_status()?;
        let unit_id = opt_id("unit_id", &r.unit_id).into_status()?;
        let decided = self
            .domain
            .decide_join_request(&caller, request_id, r.approve, &r.note, unit_id)
            .await
            .into_status()?;
        Ok(Response::new(pb::DecideJoinRequestResponse {
            join_request: Some(join_request_to_pb(decided.request)),
            activation_code: decided.activation_code.unwrap_or_default(),
        }))
    }
}
