use orgadmin_domain::model::{HistoryEvent, User};
use orgadmin_domain::services::activation::{ActivationProof, ActivationSecret};
use orgadmin_domain::services::anonymity::{AnonymityRequest, AnonymityRequestState};
use orgadmin_domain::services::users::{HistoryQuery, NewUser, UserFilter, UserPatch};
use orgadmin_domain::{Domain, DomainError};
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::user_service_server::UserService;
use tonic::{Request, Response, Status};

use super::caller;
use crate::convert::*;
use crate::error::IntoStatus;

pub struct UserHandler {
    pub domain: Domain,
}

/// Takes the user by value: its strings move into the message instead of
/// being copied.
pub fn user_to_pb(user: User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        organisation_id: user.organisation_id.to_string(),
        state: user_state_to_pb(user.state) as i32,
        email_verified: user.email_verified,
        pending_email: user.pending_email.unwrap_or_default(),
        username: user.username.unwrap_or_default(),
        cpr_masked: user.cpr_masked.unwrap_or_default(),
        birth_date: user.birth_date.unwrap_or_default(),
        unit_id: user.unit_id.map(|u| u.to_string()).unwrap_or_default(),
        phone: user.phone.unwrap_or_default(),
        language: language_to_pb(user.language) as i32,
        roles: user.roles.iter().map(|r| role_to_pb(*r) as i32).collect(),
        identification_means: identification_means_to_pb(&user.identification_means),
        signing_right: user.signing_right,
        signs_with_organisation_certificate: user.signs_with_organisation_certificate,
        service_account: user.service_account,
        anonymous: user.anonymous,
        deactivated_until: opt_timestamp(user.deactivated_until),
        etag: user.version.to_string(),
        create_time: Some(timestamp(user.created_at)),
        update_time: Some(timestamp(user.updated_at)),
        legacy_id: user.legacy_id.unwrap_or_default(),
        first_name: user.first_name,
        surname: user.surname,
        email: user.email,
        external_ids: user.external_ids,
    }
}

pub(crate) fn event_to_pb(event: &HistoryEvent) -> pb::HistoryEvent {
    pb::HistoryEvent {
        id: event.id.to_string(),
        user_id: event.subject_id.to_string(),
        activity: activity_to_pb(event.activity) as i32,
        actor: event.actor.clone(),
        actor_name: event.actor_name.clone(),
        actor_email: event.actor_email.clone().unwrap_or_default(),
        on_behalf_of: event.on_behalf_of.clone().unwrap_or_default(),
        occur_time: Some(timestamp(event.occurred_at)),
        changes: event
            .changes
            .iter()
            .map(|c| pb::FieldChange {
                field: c.field.clone(),
                before: c.before.clone(),
                after: c.after.clone(),
            })
            .collect(),
    }
}

fn anonymity_to_pb(request: &AnonymityRequest) -> pb::AnonymityRequest {
    pb::AnonymityRequest {
        id: request.id.to_string(),
        organisation_id: request.organisation_id.to_string(),
        user_id: request.user_id.to_string(),
        state: match request.state {
            AnonymityRequestState::Pending => pb::AnonymityRequestState::Pending,
            AnonymityRequestState::Approved => pb::AnonymityRequestState::Approved,
            AnonymityRequestState::Rejected => pb::AnonymityRequestState::Rejected,
        } as i32,
        reason: request.reason.clone(),
        create_time: Some(timestamp(request.created_at)),
        decided_by: request.decided_by.clone().unwrap_or_default(),
        decide_time: opt_timestamp(request.decided_at),
        decision_note: request.decision_note.clone().unwrap_or_default(),
        new_user_id: request.new_user_id.map(|u| u.to_string()).unwrap_or_default(),
    }
}

/// Exactly one of two request fields, by name.
fn one_of(a: (&str, String), b: (&str, String)) -> Result<(bool, String), DomainError> {
    match (a.1.trim().is_empty(), b.1.trim().is_empty()) {
        (false, true) => Ok((true, a.1)),
        (true, false) => Ok((false, b.1)),
        _ => Err(DomainError::invalid(
            a.0,
            format!("give exactly one of {} and {}", a.0, b.0),
        )),
    }
}

const UPDATABLE: &[&str] = &[
    "first_name",
    "surname",
    "email",
    "username",
    "cpr",
    "birth_date",
    "unit_id",
    "phone",
    "language",
    "external_ids",
    "roles",
    "identification_means",
    "signing_right",
];

fn patch_from(user: &pb::User, cpr: &str, paths: &[String]) -> Result<UserPatch, DomainError> {
    let mut patch = UserPatch::default();
    for path in paths {
        match path.as_str() {
            "first_name" => patch.first_name = Some(user.first_name.clone()),
            "surname" => patch.surname = Some(user.surname.clone()),
            "email" => patch.email = Some(user.email.clone()),
            "username" => patch.username = Some(opt_string(user.username.clone())),
            "cpr" => patch.cpr = Some(cpr.to_owned()),
            "birth_date" => patch.birth_date = Some(user.birth_date.clone()),
            "unit_id" => patch.unit_id = Some(opt_id("user.unit_id", &user.unit_id)?),
            "phone" => patch.phone = Some(opt_string(user.phone.clone())),
            "language" => {
                patch.language = Some(
                    language("user.language", user.language)?
                        .ok_or_else(|| DomainError::invalid("user.language", "must not be LANGUAGE_UNSPECIFIED"))?,
                )
            }
            "external_ids" => patch.external_ids = Some(user.external_ids.clone()),
            "roles" => patch.roles = Some(roles("user.roles", &user.roles)?),
            "identification_means" => {
                patch.identification_means = Some(identification_means(
                    "user.identification_means",
                    &user.identification_means,
                )?)
            }
            _ => patch.signing_right = Some(user.signing_right),
        }
    }
    Ok(patch)
}

#[tonic::async_trait]
impl UserService for UserHandler {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let new = NewUser {
            organisation_id: id("organisation_id", &r.organisation_id).into_status()?,
            first_name: r.first_name,
            surname: r.surname,
            email: r.email,
            username: opt_string(r.username),
            cpr: opt_string(r.cpr),
            birth_date: opt_string(r.birth_date),
            unit_id: opt_id("unit_id", &r.unit_id).into_status()?,
            phone: opt_string(r.phone),
            language: language("language", r.language).into_status()?,
            external_ids: r.external_ids,
            roles: roles("roles", &r.roles).into_status()?,
            identification_means: identification_means("identification_means", &r.identification_means)
                .into_status()?,
            signing_right: r.signing_right,
            anonymous: r.anonymous,
            request_id: opt_string(r.request_id),
            suppress_activation: r.suppress_activation,
            service_account: r.service_account,
            legacy_id: None,
        };
        let created = self.domain.create_user(&caller, new).await.into_status()?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_to_pb(created.user)),
            activation_code: created.activation_code.unwrap_or_default(),
        }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let id = id("id", &request.get_ref().id).into_status()?;
        let user = self.domain.get_user(&caller, id).await.into_status()?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let org = id("organisation_id", &r.organisation_id).into_status()?;
        let filter = UserFilter {
            state: user_state("state", r.state).into_status()?,
            role: match r.role {
                0 => None,
                value => Some(role("role", value).into_status()?),
            },
            unit_id: opt_id("unit_id", &r.unit_id).into_status()?,
            group_id: opt_id("group_id", &r.group_id).into_status()?,
            text: opt_string(r.text),
        };
        let page = self
            .domain
            .list_users(&caller, org, filter, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.items.into_iter().map(user_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user = r.user.unwrap_or_default();
        let user_id = id("user.id", &user.id).into_status()?;
        if r.update_mask
            .as_ref()
            .is_some_and(|m| m.paths.iter().any(|p| p == "anonymous"))
        {
            return Err::<Response<pb::UpdateUserResponse>, DomainError>(DomainError::invalid(
                "update_mask",
                "anonymous is set at creation only and never changed",
            ))
            .into_status();
        }
        let paths = mask_paths(r.update_mask.as_ref(), UPDATABLE).into_status()?;
        let patch = patch_from(&user, &r.cpr, &paths).into_status()?;
        let updated = self
            .domain
            .update_user(&caller, user_id, &user.etag, patch)
            .await
            .into_status()?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user_to_pb(updated)),
        }))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("id", &r.id).into_status()?;
        let until = r.until.as_ref().map(|t| millis("until", t)).transpose().into_status()?;
        let user = self
            .domain
            .deactivate_user(&caller, user_id, until, &r.reason, &r.etag)
            .await
            .into_status()?;
        Ok(Response::new(pb::DeactivateUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::ReactivateUserResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("id", &r.id).into_status()?;
        let user = self
            .domain
            .reactivate_user(&caller, user_id, &r.etag)
            .await
            .into_status()?;
        Ok(Response::new(pb::ReactivateUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("id", &r.id).into_status()?;
        let user = self.domain.delete_user(&caller, user_id, &r.etag).await.into_status()?;
        Ok(Response::new(pb::DeleteUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn list_user_history(
        &self,
        request: Request<pb::ListUserHistoryRequest>,
    ) -> Result<Response<pb::ListUserHistoryResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("user_id", &r.user_id).into_status()?;
        let query = HistoryQuery {
            page_size: r.page_size,
            page_token: r.page_token,
            start: r
                .start_time
                .as_ref()
                .map(|t| millis("start_time", t))
                .transpose()
                .into_status()?,
            end: r
                .end_time
                .as_ref()
                .map(|t| millis("end_time", t))
                .transpose()
                .into_status()?,
            activities: activities("activities", &r.activities).into_status()?,
        };
        let page = self
            .domain
            .list_user_history(&caller, user_id, query)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListUserHistoryResponse {
            events: page.items.iter().map(event_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn activate_user(
        &self,
        request: Request<pb::ActivateUserRequest>,
    ) -> Result<Response<pb::ActivateUserResponse>, Status> {
        // No bearer token: the activation secret is the credential.
        let peer = super::peer(&self.domain, &request);
        self.domain
            .limit_sign_in_attempt("activate", None, peer.as_deref())
            .into_status()?;
        let r = request.into_inner();
        let (is_token, secret) = one_of(("token", r.token), ("code", r.code)).into_status()?;
        let (is_cpr, proof) = one_of(("cpr", r.cpr), ("birth_date", r.birth_date)).into_status()?;
        let secret = if is_token {
            ActivationSecret::LinkToken(secret)
        } else {
            ActivationSecret::Code(secret)
        };
        let proof = if is_cpr {
            ActivationProof::Cpr(proof)
        } else {
            ActivationProof::BirthDate(proof)
        };
        let password = (!r.password.is_empty()).then(|| orgadmin_domain::passwords::Password::new(&r.password));
        let activated = self.domain.activate_user(secret, proof, password).await.into_status()?;
        Ok(Response::new(pb::ActivateUserResponse {
            user: Some(user_to_pb(activated.user)),
            session_token: activated.session_token.into_exposed(),
            session_expire_time: Some(timestamp(activated.session_expires_at)),
        }))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        // No bearer token: the link's token is the credential.
        crate::bounds::check(request.get_ref()).into_status()?;
        let token = request.into_inner().token;
        if token.trim().is_empty() {
            return Err(DomainError::invalid(
                "token",
                "the token from the verification link is required",
            ))
            .into_status();
        }
        let user = self.domain.verify_email(&token).await.into_status()?;
        // The link proves control of a mailbox, not who holds it (an
        // address typed wrongly reaches a stranger): the answer says whose
        // address is now in force and nothing else of their record (birth
        // date, masked CPR number, phone, roles).
        Ok(Response::new(pb::VerifyEmailResponse {
            user: Some(pb::User {
                id: user.id.to_string(),
                organisation_id: user.organisation_id.to_string(),
                email: user.email,
                email_verified: user.email_verified,
                pending_email: user.pending_email.unwrap_or_default(),
                ..Default::default()
            }),
        }))
    }

    async fn unlock_login(
        &self,
        request: Request<pb::UnlockLoginRequest>,
    ) -> Result<Response<pb::UnlockLoginResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let user_id = id("user_id", &request.get_ref().user_id).into_status()?;
        let user = self.domain.unlock_login(&caller, user_id).await.into_status()?;
        Ok(Response::new(pb::UnlockLoginResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn remove_authenticator(
        &self,
        request: Request<pb::RemoveAuthenticatorRequest>,
    ) -> Result<Response<pb::RemoveAuthenticatorResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let user_id = id("user_id", &request.get_ref().user_id).into_status()?;
        let user = self.domain.remove_authenticator(&caller, user_id).await.into_status()?;
        Ok(Response::new(pb::RemoveAuthenticatorResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn send_password_reset(
        &self,
        request: Request<pb::SendPasswordResetRequest>,
    ) -> Result<Response<pb::SendPasswordResetResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let user_id = id("user_id", &request.get_ref().user_id).into_status()?;
        self.domain.send_password_reset(&caller, user_id).await.into_status()?;
        Ok(Response::new(pb::SendPasswordResetResponse {}))
    }

    async fn send_activation(
        &self,
        request: Request<pb::SendActivationRequest>,
    ) -> Result<Response<pb::SendActivationResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("user_id", &r.user_id).into_status()?;
        let request_id = opt_string(r.request_id);
        self.domain
            .send_activation(&caller, user_id, request_id.as_deref())
            .await
            .into_status()?;
        Ok(Response::new(pb::SendActivationResponse {}))
    }

    async fn create_activation_code(
        &self,
        request: Request<pb::CreateActivationCodeRequest>,
    ) -> Result<Response<pb::CreateActivationCodeResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let user_id = id("user_id", &request.get_ref().user_id).into_status()?;
        let (code, expires_at) = self
            .domain
            .create_activation_code(&caller, user_id)
            .await
            .into_status()?;
        Ok(Response::new(pb::CreateActivationCodeResponse {
            activation_code: code,
            expire_time: Some(timestamp(expires_at)),
        }))
    }

    async fn request_anonymity(
        &self,
        request: Request<pb::RequestAnonymityRequest>,
    ) -> Result<Response<pb::RequestAnonymityResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let created = self
            .domain
            .request_anonymity(&caller, &request.get_ref().reason)
            .await
            .into_status()?;
        Ok(Response::new(pb::RequestAnonymityResponse {
            anonymity_request: Some(anonymity_to_pb(&created)),
        }))
    }

    async fn list_anonymity_requests(
        &self,
        request: Request<pb::ListAnonymityRequestsRequest>,
    ) -> Result<Response<pb::ListAnonymityRequestsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let org = id("organisation_id", &r.organisation_id).into_status()?;
        let page = self
            .domain
            .list_anonymity_requests(&caller, org, r.pending_only, r.page_size, &r.page_token)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListAnonymityRequestsResponse {
            anonymity_requests: page.items.iter().map(anonymity_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn decide_anonymity_request(
        &self,
        request: Request<pb::DecideAnonymityRequestRequest>,
    ) -> Result<Response<pb::DecideAnonymityRequestResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let request_id = id("id", &r.id).into_status()?;
        let decision = self
            .domain
            .decide_anonymity_request(&caller, request_id, r.approve, &r.note)
            .await
            .into_status()?;
        Ok(Response::new(pb::DecideAnonymityRequestResponse {
            anonymity_request: Some(anonymity_to_pb(&decision.request)),
            new_user: decision.new_user.map(user_to_pb),
            activation_code: String::new(),
        }))
    }
}
