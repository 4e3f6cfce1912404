//! Bearer tokens (R-AUTH-1): operator tokens from configuration or generated
//! on the embedded default, and API tokens that organisation administrators
//! give users and service accounts. Only SHA-256 hashes are stored.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, JoinType, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use tracing::instrument;
use uuid::Uuid;

use super::users::roles_of;
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason, is_unique_violation};
use crate::model::*;
use crate::persistence::entities::{api_token, user, user_role};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::{api_token_from_row, parse};
use crate::policy::{Action, Caller, Principal, Target, authorize};
use crate::secrets::{Secret, new_token, token_hash};
use crate::validate::{self, Violations};

const DAY: Millis = 24 * 60 * 60 * 1000;
pub const DEFAULT_TOKEN_LIFETIME: Millis = 90 * DAY;
pub const MAX_TOKEN_LIFETIME: Millis = 2 * 366 * DAY;

const KIND_OPERATOR: &str = "OPERATOR";
pub(crate) const KIND_API: &str = "API";
/// A session: handed to the person who proved who they are (activation now,
/// Login later), never to anyone else.
pub(crate) const KIND_SESSION: &str = "SESSION";

/// A token with its user's state and one role (one row per role).
#[derive(Debug, Clone, sea_orm::FromQueryResult)]
struct TokenRow {
    id: Uuid,
    kind: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    created_by: String,
    user_id: Option<Uuid>,
    organisation_id: Option<Uuid>,
    state: Option<String>,
    service_account: Option<bool>,
    role: Option<String>,
    first_name: Option<String>,
    surname: Option<String>,
    email: Option<String>,
}

impl Domain {
    /// Resolves a bearer token to its caller. Every failure reads the same to
    /// the caller, so a probe learns nothing about which tokens exist.
    ///
    /// Configured operators and cached callers are answered without a span:
    /// they touch nothing, and every call authenticates, so a span here
    /// would be a quarter of a traced GetUser's spans (BENCHMARKS.md,
    /// issue 11).
    pub async fn authenticate(&self, bearer: &str) -> DomainResult<Caller> {
        let hash = token_hash(bearer);
        if let Some((_, id)) = self.configured_operators.iter().find(|(h, _)| *h == hash) {
            return Ok(Caller::new(Principal::Operator { token_id: *id }));
        }
        let now = now_millis();
        if let Some(caller) = self.auth_cache.get(&hash, now) {
            return Ok(caller);
        }
        self.authenticate_from_database(hash, now).await
    }

    /// The token looked up: its user's state and roles, cached for the next
    /// calls.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn authenticate_from_database(&self, hash: String, now: Millis) -> DomainResult<Caller> {
        let refused = || DomainError::Unauthenticated {
            message: "the bearer token is unknown, expired or revoked".into(),
        };
        // Before the read: a revocation that clears the cache while this
        // lookup runs keeps its result out of the cache.
        let read_at = self.auth_cache.generation();
        // One round trip: the token, its user's state and roles (one row per role).
        let rows: Vec<TokenRow> = api_token::Entity::find()
            .select_only()
            .columns([
                api_token::Column::Id,
                api_token::Column::Kind,
                api_token::Column::CreatedAt,
                api_token::Column::ExpiresAt,
                api_token::Column::RevokedAt,
                api_token::Column::LastUsedAt,
                api_token::Column::CreatedBy,
                api_token::Column::UserId,
            ])
            .column(user::Column::OrganisationId)
            .column(user::Column::State)
            .column(user::Column::ServiceAccount)
            .column(user_role::Column::Role)
            .columns([user::Column::FirstName, user::Column::Surname, user::Column::Email])
            .join(
                JoinType::LeftJoin,
                api_token::Entity::belongs_to(user::Entity)
                    .from(api_token::Column::UserId)
                    .to(user::Column::Id)
                    .into(),
            )
            .join_rev(JoinType::LeftJoin, crate::persistence::roles_of_user())
            .filter(api_token::Column::TokenHash.eq(&hash))
            .into_model::<TokenRow>()
            .all(&self.db)
            .await?;
        let Some(TokenRow {
            id: token_id,
            kind,
            created_at,
            expires_at,
            revoked_at,
            last_used_at,
            created_by,
            user_id,
            organisation_id,
            state,
            service_account,
            first_name: first,
            surname,
            email,
            ..
        }) = rows.first().cloned()
        else {
            return Err(refused());
        };
        if revoked_at.is_some() || expires_at.is_some_and(|at| at <= now) {
            return Err(refused());
        }
        let mut expires_at = expires_at;
        if kind == KIND_SESSION {
            // Idle expiry: a session unused for session_idle_ms ends.
            let idle_ms = self.settings.session_idle_ms;
            let last_used = last_used_at.unwrap_or(created_at);
            if now - last_used >= idle_ms {
                return Err(refused());
            }
            let idle_end = self.note_session_use(token_id, last_used, now).await? + idle_ms;
            // The cache may not keep it past its idle end either.
            expires_at = Some(expires_at.map_or(idle_end, |at| at.min(idle_end)));
        }
        if kind == KIND_OPERATOR {
            // The token generated on the embedded default's first start has
            // no end and no RPC revokes it: configuring operator tokens
            // (the rotation recipe) retires it, or a copy of the old
            // `data/operator-token` would act as operator for good.
            if !self.configured_operators.is_empty() {
                return Err(refused());
            }
            let caller = Caller::new(Principal::Operator { token_id });
            self.auth_cache.put(hash, caller.clone(), read_at, now, expires_at);
            return Ok(caller);
        }
        let (Some(user_id), Some(organisation_id), Some(state)) = (user_id, organisation_id, state) else {
            return Err(refused());
        };
        // A deactivated or deleted user cannot act (R-USR-4).
        if !parse::<UserState>(&state)?.is_standing() {
            return Err(refused());
        }
        if kind == KIND_API {
            match made_by_another(&created_by, user_id) {
                // R-USR-4, R-ACC-5: a service account's token was made
                // through a share by a colleague, and acts only while that
                // person may act. A deactivated colleague (for a time, too)
                // must not keep acting as the account; the token works again
                // when they are reactivated, as their own sign-in does.
                // Ending the share revokes it for good.
                Some(maker) if !self.user_stands(maker).await? => return Err(refused()),
                // A service account's token it made for itself (before
                // that was refused; migration 75 revoked those it found,
                // but pods of the older release made more during the
                // upgrade): no person answers for it, so it is no
                // credential, whenever it was written.
                None if service_account == Some(true) => return Err(refused()),
                _ => {}
            }
        }
        let roles = rows
            .iter()
            .filter_map(|row| row.role.as_deref())
            .map(parse::<Role>)
            .collect::<DomainResult<Vec<_>>>()?;
        // A second round trip, on a cache miss only; the levels' subtrees
        // resolved here keep every later check pure.
        let levels = super::access::held_levels(self, &self.db, organisation_id, user_id).await?;
        let caller = Caller::new(Principal::Member {
            user_id,
            organisation_id,
            roles,
            levels,
        })
        .with_identity(
            format!("{} {}", first.unwrap_or_default(), surname.unwrap_or_default()),
            email.unwrap_or_default(),
        )
        .with_credential(token_id);
        self.auth_cache.put(hash, caller.clone(), read_at, now, expires_at);
        Ok(caller)
    }

    /// Whether the user exists and may act (active or pending).
    async fn user_stands(&self, user_id: Uuid) -> DomainResult<bool> {
        let state: Option<String> = user::Entity::find_by_id(user_id)
            .select_only()
            .column(user::Column::State)
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(match state {
            Some(state) => parse::<UserState>(&state)?.is_standing(),
            None => false,
        })
    }

    /// Notes that a session was used, at most every `mark_every` (a
    /// minute, or a quarter of the idle time when that is shorter): reads
    /// stay reads in the common case, and the idle end is never more than
    /// that early.
    /// Returns the use the idle time now counts from.
    async fn note_session_use(&self, token_id: Uuid, last_used: Millis, now: Millis) -> DomainResult<Millis> {
        let mark_every = (self.settings.session_idle_ms / 4).clamp(1, 60_000);
        if now - last_used < mark_every {
            return Ok(last_used);
        }
        let txn = crate::persistence::begin_write(&self.db).await?;
        api_token::Entity::update_many()
            .col_expr(api_token::Column::LastUsedAt, sea_orm::sea_query::Expr::value(now))
            .filter(api_token::Column::Id.eq(token_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(now)
    }

    /// On the embedded default with no operator token configured: makes one
    /// the first time and returns it (the caller shows it once). Later starts
    /// return `None`.
    pub async fn bootstrap_operator_token(&self) -> DomainResult<Option<String>> {
        if !self.configured_operators.is_empty() {
            return Ok(None);
        }
        let existing = api_token::Entity::find()
            .filter(api_token::Column::Kind.eq(KIND_OPERATOR))
            .count(&self.db)
            .await?;
        if existing > 0 {
            return Ok(None);
        }
        let secret = new_token();
        let now = now_millis();
        let id = Uuid::now_v7();
        api_token::Entity::insert(api_token::ActiveModel {
            id: Set(id),
            kind: Set(KIND_OPERATOR.into()),
            organisation_id: Set(None),
            user_id: Set(None),
            name: Set("embedded default operator".into()),
            token_hash: Set(token_hash(&secret)),
            created_by: Set("system:bootstrap".into()),
            created_at: Set(now),
            expires_at: Set(None),
            revoked_at: Set(None),
            create_request_id: Set(None),
            last_used_at: Set(None),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(Some(secret))
    }

    /// Starts a session for a person who just proved who they are, inside
    /// the transaction of that proof (activation; Login reuses it). The
    /// secret is returned once, to that person; only its hash is stored.
    pub(crate) async fn issue_session(
        &self,
        txn: &DatabaseTransaction,
        user: &user::Model,
        how: &str,
        now: Millis,
    ) -> DomainResult<(Secret, Millis)> {
        let (mut row, secret, expires_at) = self.new_session(user.id, how, now);
        row.organisation_id = Set(Some(user.organisation_id));
        api_token::Entity::insert(row).exec_without_returning(txn).await?;
        Ok((secret, expires_at))
    }

    /// A session's row for `user_id` (but for its organisation, which the
    /// caller sets: `log_in_in_one_statement` takes it from the row it
    /// locks), its secret and when it ends.
    pub(crate) fn new_session(
        &self,
        user_id: Uuid,
        how: &str,
        now: Millis,
    ) -> (api_token::ActiveModel, Secret, Millis) {
        let secret = new_token();
        let expires_at = now + self.settings.session_ttl_ms;
        let row = api_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            kind: Set(KIND_SESSION.into()),
            organisation_id: sea_orm::ActiveValue::NotSet,
            user_id: Set(Some(user_id)),
            name: Set(format!("session ({how})")),
            token_hash: Set(token_hash(&secret)),
            created_by: Set(format!("user:{user_id}")),
            created_at: Set(now),
            expires_at: Set(Some(expires_at)),
            revoked_at: Set(None),
            create_request_id: Set(None),
            last_used_at: Set(None),
        };
        (row, Secret::new(secret), expires_at)
    }

    /// Gives the caller an API token of their own (R-AUTH-1: never one that
    /// acts as somebody else); returns it with its secret. A retry with the
    /// `request_id` of an earlier call makes no second token, and cannot
    /// show the secret again (it is shown once): it answers
    /// REQUEST_ALREADY_DONE naming the token the first call made.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn create_api_token(
        &self,
        caller: &Caller,
        user_id: Uuid,
        name: &str,
        expires_at: Option<Millis>,
        request_id: Option<&str>,
    ) -> DomainResult<(ApiToken, String)> {
        let target = self.authorize_on_user(caller, Action::CreateApiToken, user_id).await?;
        // R-AUTH-1, R-ACC-5: through a share, a credential is made for a
        // service account only; a person's would act as them past the share.
        if caller.acting.is_some() && !target.service_account {
            return Err(DomainError::denied(
                "API tokens are made through a share for service accounts only; a person makes their own",
            ));
        }
        // A service account's tokens come through its shares only, so each
        // names the person who made it and ends with their share; one the
        // account made with its own token would name nobody and outlive it.
        if caller.acting.is_none() && target.service_account {
            return Err(DomainError::denied(
                "a service account's tokens are made through a share of it, by a person, not by the account itself",
            ));
        }
        let mut v = Violations::default();
        v.check("name", validate::text(name, 100));
        if let Some(id) = request_id {
            v.check("request_id", validate::request_id(id));
        }
        v.into_result()?;
        let now = now_millis();
        let expires_at = expires_at.unwrap_or(now + DEFAULT_TOKEN_LIFETIME);
        if expires_at <= now {
            return Err(DomainError::invalid("expire_time", "must be in the future"));
        }
        if expires_at > now + MAX_TOKEN_LIFETIME {
            return Err(DomainError::invalid(
                "expire_time",
                "must be at most two years from now",
            ));
        }
        if !parse::<UserState>(&target.state)?.is_standing() {
            return Err(DomainError::precondition(
                Reason::UserNotActive,
                "only active or pending users can be given a token",
            ));
        }
        let secret = new_token();
        let txn = crate::persistence::begin_write(&self.db).await?;
        if let Some(acting) = caller.acting {
            // The share was read when the call came in, outside this
            // transaction: ended (or made read-only) since, its
            // revocation's sweep of tokens made through it could not see
            // this one, which would act as the account for two years.
            super::access::ensure_share_allows_edit(&txn, target.organisation_id, user_id, acting.by).await?;
        }
        // A password reset of the person making the token ends every API
        // token they made, in one statement that cannot see a token
        // inserted and not yet committed: made with a session (perhaps a
        // stolen one) the reset was ending, the token outlived it by two
        // years. The reset locks the person's row; so does this, and then
        // the credential the call came with must still be live.
        if let Some(maker) = caller.acting_user_id() {
            crate::services::users::lock_user_row(&txn, maker).await?;
            ensure_credential_live(&txn, caller, now).await?;
        }
        if let Some(done) = token_by_request(&txn, user_id, request_id).await? {
            return Err(request_already_done(done.id));
        }
        let inserted = api_token::Entity::insert(api_token::ActiveModel {
            id: Set(Uuid::now_v7()),
            kind: Set(KIND_API.into()),
            organisation_id: Set(Some(target.organisation_id)),
            user_id: Set(Some(user_id)),
            name: Set(name.trim().to_owned()),
            token_hash: Set(token_hash(&secret)),
            created_by: Set(caller.actor()),
            created_at: Set(now),
            expires_at: Set(Some(expires_at)),
            revoked_at: Set(None),
            create_request_id: Set(request_id.map(str::to_owned)),
            last_used_at: Set(None),
        })
        .exec_with_returning(&txn)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(err) => {
                // A parallel attempt with the same request id committed first.
                let _ = txn.rollback().await;
                if is_unique_violation(&err)
                    && let Some(done) = token_by_request(&self.db, user_id, request_id).await?
                {
                    return Err(request_already_done(done.id));
                }
                return Err(err.into());
            }
        };
        let mut changes = Vec::new();
        diff(&mut changes, "api_token", "", row.id);
        diff(&mut changes, "name", "", &row.name);
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(target.organisation_id),
                subject: Subject::User(user_id),
                activity: Activity::ApiTokenCreated,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        Ok((api_token_from_row(row), secret))
    }

    /// An organisation's API tokens; an operator sees its administrators'
    /// only, any other member their own.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_api_tokens(&self, caller: &Caller, organisation_id: Uuid) -> DomainResult<Vec<ApiToken>> {
        // Live ones only: every login leaves a session row, so listing the
        // ended ones too grew without end (past about 25,000 logins the
        // answer no longer fit in a message, and the call failed for good).
        let now = now_millis();
        let mut query = api_token::Entity::find()
            .filter(api_token::Column::OrganisationId.eq(organisation_id))
            .filter(api_token::Column::RevokedAt.is_null())
            .filter(
                sea_orm::Condition::any()
                    .add(api_token::Column::ExpiresAt.is_null())
                    .add(api_token::Column::ExpiresAt.gt(now)),
            )
            // A session unused past the idle time has ended (authentication
            // refuses it) though its row says nothing of it.
            .filter(
                sea_orm::Condition::any()
                    .add(api_token::Column::Kind.ne(KIND_SESSION))
                    .add(super::sessions::session_not_idle(now, self.settings.session_idle_ms)),
            )
            .order_by_asc(api_token::Column::Id);
        if let super::Visible::Concerning(me) =
            super::visible_to(caller, Action::ManageApiTokens, organisation_id, "API tokens")?
        {
            query = query.filter(api_token::Column::UserId.eq(me));
        }
        // A share opens the owner's API tokens, not their sign-in sessions.
        if caller.acting.is_some() {
            query = query.filter(api_token::Column::Kind.eq(KIND_API));
        }
        if crate::policy::operator_sees_administrators_only(caller) {
            let admin_roles: Vec<&str> = Role::ALL
                .iter()
                .filter(|r| r.is_administrator())
                .map(|r| r.as_str())
                .collect();
            query = query.filter(
                api_token::Column::UserId.in_subquery(
                    Query::select()
                        .column(user_role::Column::UserId)
                        .from(user_role::Entity)
                        .and_where(user_role::Column::OrganisationId.eq(organisation_id))
                        .and_where(user_role::Column::Role.is_in(admin_roles))
                        .to_owned(),
                ),
            );
        }
        Ok(query.all(&self.db).await?.into_iter().map(api_token_from_row).collect())
    }

    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn revoke_api_token(&self, caller: &Caller, id: Uuid) -> DomainResult<ApiToken> {
        // A share opens the owner's API tokens, not their sign-in sessions.
        let kinds: &[&str] = if caller.acting.is_some() {
            &[KIND_API]
        } else {
            &[KIND_API, KIND_SESSION]
        };
        let row = api_token::Entity::find_by_id(id)
            .filter(api_token::Column::Kind.is_in(kinds.iter().copied()))
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("api token", id))?;
        let (Some(org_id), Some(user_id)) = (row.organisation_id, row.user_id) else {
            return Err(DomainError::not_found("api token", id));
        };
        let roles = roles_of(&self.db, &[user_id])
            .await?
            .remove(&user_id)
            .unwrap_or_default();
        let is_admin = roles.iter().any(|r| r.is_administrator());
        // Another organisation's token, or (for the operator) an ordinary
        // user's, reads as missing: a refusal told that it exists.
        if !crate::policy::sees_user(caller, org_id, is_admin) {
            return Err(DomainError::not_found("api token", id));
        }
        authorize(
            caller,
            Action::ManageApiTokens,
            Target::user(org_id, user_id, is_admin, None),
        )?;
        if row.revoked_at.is_some() {
            return Ok(api_token_from_row(row));
        }
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        // Conditional, so two parallel revocations record one event.
        let revoked = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, sea_orm::sea_query::Expr::value(now))
            .filter(api_token::Column::Id.eq(id))
            .filter(api_token::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let updated = api_token::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| DomainError::not_found("api token", id))?;
        if revoked.rows_affected == 0 {
            txn.commit().await?;
            return Ok(api_token_from_row(updated));
        }
        let mut changes = Vec::new();
        diff(&mut changes, "api_token", row.id, "");
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org_id),
                subject: Subject::User(user_id),
                activity: Activity::ApiTokenRevoked,
                caller,
                at: now,
                changes,
            },
        )
        .await?;
        txn.commit().await?;
        self.auth_cache.clear();
        Ok(api_token_from_row(updated))
    }
}

/// The person who made a token for somebody else (`created_by` names a
/// user other than the token's own): through a share, for a service account.
fn made_by_another(created_by: &str, token_user: Uuid) -> Option<Uuid> {
    let maker = Uuid::parse_str(created_by.strip_prefix("user:")?).ok()?;
    (maker != token_user).then_some(maker)
}

/// The API token a user's earlier create with this request id made.
async fn token_by_request(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    request_id: Option<&str>,
) -> DomainResult<Option<api_token::Model>> {
    let Some(request_id) = request_id else {
        return Ok(None);
    };
    Ok(api_token::Entity::find()
        .filter(api_token::Column::UserId.eq(user_id))
        .filter(api_token::Column::CreateRequestId.eq(request_id))
        .one(db)
        .await?)
}

fn request_already_done(token_id: Uuid) -> DomainError {
    DomainError::RequestAlreadyDone {
        resource: "api token",
        id: token_id.to_string(),
        message: format!(
            "this request_id already made API token {token_id}; its secret was shown once and is not shown again \
             (revoke that token and create a new one with a new request_id if the secret was lost)"
        ),
    }
}

/// The session or API token `caller` came with is still unrevoked and
/// unexpired, as read in `txn` (after a lock that orders it with whatever
/// ends it).
async fn ensure_credential_live(txn: &DatabaseTransaction, caller: &Caller, now: Millis) -> DomainResult<()> {
    let Some(id) = caller.credential else {
        return Ok(());
    };
    let live = api_token::Entity::find_by_id(id)
        .filter(api_token::Column::RevokedAt.is_null())
        .one(txn)
        .await?
        .is_some_and(|token| token.expires_at.is_none_or(|at| at > now));
    if !live {
        return Err(DomainError::Unauthenticated {
            message: "the bearer token is unknown, expired or revoked".into(),
        });
    }
    Ok(())
}
