use orgadmin_domain::Domain;
use orgadmin_domain::Principal;
use orgadmin_domain::model::ApiToken;
use orgadmin_domain::passwords::Password;
use orgadmin_domain::services::login::LoginAttempt;
use orgadmin_domain::services::second_factor::LoginOutcome;
use orgadmin_proto::v1 as pb;
use orgadmin_proto::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use super::caller;
use crate::convert::*;
use crate::error::IntoStatus;

pub struct AuthHandler {
    pub domain: Domain,
}

fn token_to_pb(token: &ApiToken) -> pb::ApiToken {
    pb::ApiToken {
        id: token.id.to_string(),
        organisation_id: token.organisation_id.map(|o| o.to_string()).unwrap_or_default(),
        user_id: token.user_id.map(|u| u.to_string()).unwrap_or_default(),
        name: token.name.clone(),
        create_time: Some(timestamp(token.created_at)),
        expire_time: opt_timestamp(token.expires_at),
        revoke_time: opt_timestamp(token.revoked_at),
    }
}

#[tonic::async_trait]
impl AuthService for AuthHandler {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        // No bearer token: the password is the credential.
        crate::bounds::check(request.get_ref()).into_status()?;
        let peer = super::peer(&self.domain, &request);
        let r = request.into_inner();
        self.domain
            .limit_sign_in_attempt("login", Some(&r.login_id), peer.as_deref())
            .into_status()?;
        let organisation_id = opt_string(r.organisation_id)
            .map(|o| id("organisation_id", &o))
            .transpose()
            .into_status()?;
        let logged_in = self
            .domain
            .login(LoginAttempt {
                login_id: r.login_id,
                password: Password::new(&r.password),
                organisation_id,
                peer,
            })
            .await
            .into_status()?;
        Ok(Response::new(match logged_in {
            LoginOutcome::LoggedIn(session) => pb::LoginResponse {
                user_id: session.user_id.to_string(),
                organisation_id: session.organisation_id.to_string(),
                session_token: session.session_token.into_exposed(),
                session_expire_time: Some(timestamp(session.session_expires_at)),
                ..Default::default()
            },
            LoginOutcome::SecondFactor(challenge) => pb::LoginResponse {
                user_id: challenge.user_id.to_string(),
                organisation_id: challenge.organisation_id.to_string(),
                second_factor: second_factor_method_to_pb(challenge.method) as i32,
                challenge_token: challenge.challenge_token.into_exposed(),
                challenge_expire_time: Some(timestamp(challenge.expires_at)),
                ..Default::default()
            },
        }))
    }

    async fn verify_login_code(
        &self,
        request: Request<pb::VerifyLoginCodeRequest>,
    ) -> Result<Response<pb::VerifyLoginCodeResponse>, Status> {
        // No bearer token: the challenge token and the code are the credential.
        crate::bounds::check(request.get_ref()).into_status()?;
        let peer = super::peer(&self.domain, &request);
        let r = request.into_inner();
        self.domain
            .limit_sign_in_attempt("login_code", None, peer.as_deref())
            .into_status()?;
        let session = self
            .domain
            .verify_login_code(&r.challenge_token, &r.code, peer)
            .await
            .into_status()?;
        Ok(Response::new(pb::VerifyLoginCodeResponse {
            user_id: session.user_id.to_string(),
            organisation_id: session.organisation_id.to_string(),
            session_token: session.session_token.into_exposed(),
            session_expire_time: Some(timestamp(session.session_expires_at)),
        }))
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let enrolment = self.domain.enroll_totp(&caller).await.into_status()?;
        Ok(Response::new(pb::EnrollTotpResponse {
            secret: enrolment.secret.into_exposed(),
            otpauth_uri: enrolment.otpauth_uri.into_exposed(),
        }))
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        self.domain
            .confirm_totp(&caller, &request.get_ref().code)
            .await
            .into_status()?;
        Ok(Response::new(pb::ConfirmTotpResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let bearer = super::bearer(request.metadata())?;
        let user_id = opt_string(request.get_ref().user_id.clone())
            .map(|u| id("user_id", &u))
            .transpose()
            .into_status()?;
        let sessions = self
            .domain
            .list_sessions(&caller, user_id, bearer)
            .await
            .into_status()?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| pb::Session {
                    id: s.id.to_string(),
                    user_id: s.user_id.to_string(),
                    name: s.name,
                    create_time: Some(timestamp(s.created_at)),
                    expire_time: Some(timestamp(s.expires_at)),
                    last_use_time: Some(timestamp(s.last_used_at)),
                    idle_expire_time: Some(timestamp(s.idle_expires_at)),
                    current: s.current,
                })
                .collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let session_id = id("id", &request.get_ref().id).into_status()?;
        self.domain.revoke_session(&caller, session_id).await.into_status()?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        // No bearer token: anyone may ask; the link goes to the person.
        crate::bounds::check(request.get_ref()).into_status()?;
        let peer = super::peer(&self.domain, &request);
        let r = request.into_inner();
        self.domain
            .limit_sign_in_attempt("reset", Some(&r.login_id), peer.as_deref())
            .into_status()?;
        let organisation_id = opt_string(r.organisation_id)
            .map(|o| id("organisation_id", &o))
            .transpose()
            .into_status()?;
        self.domain
            .request_password_reset(&r.login_id, organisation_id, peer)
            .await
            .into_status()?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        // No bearer token: the link's token is the credential.
        crate::bounds::check(request.get_ref()).into_status()?;
        let peer = super::peer(&self.domain, &request);
        let r = request.into_inner();
        self.domain
            .limit_sign_in_attempt("reset_password", None, peer.as_deref())
            .into_status()?;
        self.domain
            .reset_password(&r.token, Password::new(&r.password), peer)
            .await
            .into_status()?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let bearer = super::bearer(request.metadata())?;
        self.domain.logout(&caller, bearer).await.into_status()?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn create_api_token(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreateApiTokenResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let r = request.into_inner();
        let user_id = id("user_id", &r.user_id).into_status()?;
        let expires = r
            .expire_time
            .as_ref()
            .map(|t| millis("expire_time", t))
            .transpose()
            .into_status()?;
        let (token, secret) = self
            .domain
            .create_api_token(&caller, user_id, &r.name, expires, opt_string(r.request_id).as_deref())
            .await
            .into_status()?;
        Ok(Response::new(pb::CreateApiTokenResponse {
            api_token: Some(token_to_pb(&token)),
            secret,
        }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let org = id("organisation_id", &request.get_ref().organisation_id).into_status()?;
        let tokens = self.domain.list_api_tokens(&caller, org).await.into_status()?;
        Ok(Response::new(pb::ListApiTokensResponse {
            api_tokens: tokens.iter().map(token_to_pb).collect(),
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Result<Response<pb::RevokeApiTokenResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let token_id = id("id", &request.get_ref().id).into_status()?;
        let token = self.domain.revoke_api_token(&caller, token_id).await.into_status()?;
        Ok(Response::new(pb::RevokeApiTokenResponse {
            api_token: Some(token_to_pb(&token)),
        }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller(&self.domain, &request).await?;
        let acting = caller.acting;
        let mut response = match caller.principal {
            Principal::Operator { .. } => pb::WhoAmIResponse {
                operator: true,
                ..Default::default()
            },
            Principal::Member {
                user_id,
                organisation_id,
                roles,
                levels,
            } => pb::WhoAmIResponse {
                operator: false,
                user_id: user_id.to_string(),
                organisation_id: organisation_id.to_string(),
                roles: roles.iter().map(|r| role_to_pb(*r) as i32).collect(),
                admin_levels: levels
                    .iter()
                    .map(|held| pb::HeldAdminLevel {
                        level: i32::from(held.level),
                        unit_id: held.unit_id().map(|u| u.to_string()).unwrap_or_default(),
                    })
                    .collect(),
                ..Default::default()
            },
            Principal::System { .. } => pb::WhoAmIResponse::default(),
        };
        if let Some(acting) = acting {
            response.acting_user_id = acting.by.to_string();
            response.acting_may_edit = acting.may_edit;
        }
        Ok(Response::new(response))
    }
}
