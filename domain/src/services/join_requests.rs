//! Requests to join an organisation (R-ORG-3, R-ACC-9): where the
//! organisation allows it (its `join_requests_allowed` setting), a person
//! who is not a member asks to join, with their name, address, birth date
//! and a reason. Nobody is told anything until the person proves the
//! address: the request waits UNCONFIRMED until the link mailed to it is
//! opened (ConfirmJoinRequest), so an open form mails no administrator and
//! no third party more than one link. Confirmed, it is OPEN for the
//! organisation's user administrators (who create users): approving creates
//! the user through CreateUser's own write (licences, addresses taken) with
//! the birth date, so the approver receives the activation code once and
//! hands it over, as for any birth-date user; rejecting tells the person.
//! History: `JOIN_REQUESTED` and `JOIN_REQUEST_REJECTED` on the
//! organisation, `JOIN_REQUEST_APPROVED` on the user made.

use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tracing::instrument;
use uuid::Uuid;

use super::lock_organisation;
use super::notifications::NotificationKind;
use super::users::{NewUser, check_birth_date, check_identity_fields};
use crate::Domain;
use crate::error::{DomainError, DomainResult, Reason};
use crate::mail::MailKind;
use crate::model::*;
use crate::paging;
use crate::persistence::entities::{join_request, organisation};
use crate::persistence::history::{self, NewEvent, Subject};
use crate::persistence::mapping::parse;
use crate::policy::{Action, Caller, Principal, Target, authorize};
use crate::secrets::{new_token, token_hash};
use crate::validate::{self, Violations};

crate::string_enum_pub!(
    JoinRequestState {
        Unconfirmed => "UNCONFIRMED",
        Open => "OPEN",
        Approved => "APPROVED",
        Rejected => "REJECTED",
    }
);

/// How long a confirmation link works.
const CONFIRM_WITHIN_MS: i64 = 24 * 60 * 60 * 1000;
/// Unconfirmed requests one organisation holds at most: past this an open
/// form is being abused, and the next waits (RATE_LIMITED).
const UNCONFIRMED_PER_ORGANISATION: u64 = 200;
/// Open (confirmed, undecided) requests one organisation holds at most.
const OPEN_PER_ORGANISATION: u64 = 500;
/// A new link for an unconfirmed request goes out at most this often: an
/// open form must not make the organisation mail one address without end.
const RESEND_AFTER_MS: i64 = 15 * 60 * 1000;

/// A request to join, as the person gives it.
#[derive(Debug, Clone, Default)]
pub struct NewJoinRequest {
    pub organisation_cvr: String,
    pub first_name: String,
    pub surname: String,
    pub email: String,
    pub birth_date: String,
    pub language: Option<Language>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub first_name: String,
    pub surname: String,
    pub email: String,
    pub reason: String,
    pub state: JoinRequestState,
    pub created_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub decided_by: Option<String>,
    pub decided_at: Option<Millis>,
    pub decision_note: Option<String>,
    /// The user made on approval.
    pub user_id: Option<Uuid>,
}

/// A decision's outcome: the request, and for an approval the user's
/// activation code, shown this once to the approver.
#[derive(Clone)]
pub struct DecidedJoinRequest {
    pub request: JoinRequest,
    pub activation_code: Option<String>,
}

/// The code never shows.
impl std::fmt::Debug for DecidedJoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecidedJoinRequest")
            .field("request", &self.request)
            .field(
                "activation_code",
                &crate::services::users::cpr_shown(&self.activation_code),
            )
            .finish()
    }
}

fn from_row(row: join_request::Model) -> DomainResult<JoinRequest> {
    Ok(JoinRequest {
        id: row.id,
        organisation_id: row.organisation_id,
        first_name: row.first_name,
        surname: row.surname,
        email: row.email,
        reason: row.reason,
        state: parse(&row.state)?,
        created_at: row.created_at,
        confirmed_at: row.confirmed_at,
        decided_by: row.decided_by,
        decided_at: row.decided_at,
        decision_note: row.decision_note,
        user_id: row.user_id,
    })
}

/// Who history names for a step the person took themselves: nobody's
/// account yet, so the request, with the name and address given.
fn person(row: &join_request::Model) -> Caller {
    Caller::new(Principal::System { task: "join-request" })
        .with_identity(format!("{} {}", row.first_name, row.surname), row.email.clone())
}

fn shown(row: &join_request::Model) -> String {
    format!("{} {} <{}>", row.first_name, row.surname, row.email)
}

impl Domain {
    /// R-ORG-3: a person asks to join the organisation with this CVR. The
    /// answer says nothing of earlier requests. A confirmation link goes to
    /// the address given; asking again for a request still unconfirmed
    /// mails a fresh link (at most every 15 minutes, the request as first
    /// given: nobody rewrites another's request), and nothing while one
    /// from the address waits for a decision.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn request_to_join(&self, new: NewJoinRequest) -> DomainResult<()> {
        let mut v = Violations::default();
        v.check("organisation_cvr", validate::cvr(&new.organisation_cvr));
        let (first_name, surname, email) =
            check_identity_fields(&mut v, "", Some(&new.first_name), Some(&new.surname), Some(&new.email));
        let birth_date = check_birth_date(&mut v, "birth_date", &new.birth_date);
        v.check("reason", validate::lines_of_text(&new.reason, 10, 1000));
        let reason = new.reason.trim();
        v.into_result()?;
        let (Some(first_name), Some(surname), Some(email), Some(birth_date)) = (first_name, surname, email, birth_date)
        else {
            return Err(DomainError::Internal("checked fields missing".into()));
        };
        let org = organisation::Entity::find()
            .filter(organisation::Column::Cvr.eq(new.organisation_cvr.as_str()))
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("organisation", format!("with CVR {}", new.organisation_cvr)))?;
        refuse_unless_allowed(&org)?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, org.id).await?;
        refuse_unless_allowed(&org)?;
        let now = now_millis();
        // Expired unconfirmed requests are nobody's: they go (with the
        // birth dates they hold) before anything is counted.
        join_request::Entity::delete_many()
            .filter(join_request::Column::OrganisationId.eq(org.id))
            .filter(join_request::Column::State.eq(JoinRequestState::Unconfirmed.as_str()))
            .filter(join_request::Column::ExpiresAt.lte(now))
            .exec(&txn)
            .await?;
        // The same for every address, before anything about this one is
        // looked at: the answer must not tell who asked already.
        let unconfirmed = join_request::Entity::find()
            .filter(join_request::Column::OrganisationId.eq(org.id))
            .filter(join_request::Column::State.eq(JoinRequestState::Unconfirmed.as_str()))
            .count(&txn)
            .await?;
        if unconfirmed >= UNCONFIRMED_PER_ORGANISATION {
            return Err(DomainError::RateLimited {
                message: "the organisation has too many unconfirmed requests to join; try again later".into(),
                retry_after_ms: 60_000,
            });
        }
        let waiting = join_request::Entity::find()
            .filter(join_request::Column::OrganisationId.eq(org.id))
            .filter(join_request::Column::EmailKey.eq(email.key()))
            .filter(
                join_request::Column::State
                    .is_in([JoinRequestState::Unconfirmed.as_str(), JoinRequestState::Open.as_str()]),
            )
            .one(&txn)
            .await?;
        let row = match waiting {
            // Confirmed already and waiting for a decision: nothing to mail.
            Some(w) if w.state == JoinRequestState::Open.as_str() => None,
            // Mailed a moment ago: the link in that mail still works.
            Some(w) if now - w.mailed_at < RESEND_AFTER_MS => None,
            // A fresh link for the request as first given.
            Some(w) => {
                let token = new_token();
                let mut active: join_request::ActiveModel = w.into();
                active.token_hash = Set(Some(token_hash(&token)));
                active.expires_at = Set(now + CONFIRM_WITHIN_MS);
                active.mailed_at = Set(now);
                Some((active.update(&txn).await?, token))
            }
            None => {
                let token = new_token();
                let language = new.language.unwrap_or(Language::Da);
                let row = join_request::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    organisation_id: Set(org.id),
                    first_name: Set(first_name),
                    surname: Set(surname),
                    email: Set(email.as_str().to_owned()),
                    email_key: Set(email.key().to_owned()),
                    birth_date: Set(birth_date),
                    language: Set(language.to_string()),
                    reason: Set(reason.to_owned()),
                    state: Set(JoinRequestState::Unconfirmed.as_str().into()),
                    token_hash: Set(Some(token_hash(&token))),
                    expires_at: Set(now + CONFIRM_WITHIN_MS),
                    mailed_at: Set(now),
                    created_at: Set(now),
                    confirmed_at: Set(None),
                    decided_by: Set(None),
                    decided_at: Set(None),
                    decision_note: Set(None),
                    user_id: Set(None),
                };
                Some((row.insert(&txn).await?, token))
            }
        };
        let Some((row, token)) = row else {
            txn.commit().await?;
            return Ok(());
        };
        let language: Language = parse(&row.language)?;
        let url = self.settings.join_confirmation_url_template.replace("{token}", &token);
        // Neither greeting nor display name: anyone may have this mail sent
        // to any address, and the name is theirs to choose, so it would carry
        // their text ("Your account is blocked, call …") under the
        // organisation's name. The organisation's user administrators see
        // the name once the address's owner has confirmed.
        self.enqueue_mail_until(
            &txn,
            Some(org.id),
            MailKind::JoinConfirmation,
            &row.email,
            "",
            language,
            &[
                ("organisation_name", &org.name),
                ("confirmation_link", &url),
                ("expires_at", &crate::mail::date_time(row.expires_at)),
            ],
            Some(row.expires_at),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The person opened the link: the request is OPEN and the
    /// organisation's user administrators are told. A link works once.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn confirm_join_request(&self, token: &str) -> DomainResult<JoinRequest> {
        let unknown = || {
            DomainError::precondition(
                Reason::JoinConfirmationUnknown,
                "this confirmation link is not known (or was replaced by a newer one)",
            )
        };
        if token.is_empty() || token.len() > 200 {
            return Err(unknown());
        }
        let hash = token_hash(token);
        let row = join_request::Entity::find()
            .filter(join_request::Column::TokenHash.eq(hash.as_str()))
            .one(&self.db)
            .await?
            .ok_or_else(unknown)?;
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, row.organisation_id).await?;
        let row = join_request::Entity::find_by_id(row.id)
            .one(&txn)
            .await?
            .filter(|r| r.token_hash.as_deref() == Some(hash.as_str()))
            .ok_or_else(unknown)?;
        let now = now_millis();
        if row.expires_at <= now {
            return Err(DomainError::precondition(
                Reason::JoinConfirmationExpired,
                "this confirmation link has expired; ask to join again for a new one",
            ));
        }
        refuse_unless_allowed(&org)?;
        let open = join_request::Entity::find()
            .filter(join_request::Column::OrganisationId.eq(org.id))
            .filter(join_request::Column::State.eq(JoinRequestState::Open.as_str()))
            .count(&txn)
            .await?;
        if open >= OPEN_PER_ORGANISATION {
            return Err(DomainError::RateLimited {
                message: "the organisation has too many requests to join waiting for a decision; try again later"
                    .into(),
                retry_after_ms: 60 * 60_000,
            });
        }
        let mut active: join_request::ActiveModel = row.clone().into();
        active.state = Set(JoinRequestState::Open.as_str().into());
        active.confirmed_at = Set(Some(now));
        active.token_hash = Set(None);
        let confirmed = active.update(&txn).await?;
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org.id),
                subject: Subject::Organisation(org.id),
                activity: Activity::JoinRequested,
                caller: &person(&row),
                at: now,
                changes: vec![
                    FieldChange {
                        field: "join_request".into(),
                        before: String::new(),
                        after: format!("{} ({})", shown(&row), row.id),
                    },
                    FieldChange {
                        field: "reason".into(),
                        before: String::new(),
                        after: row.reason.clone(),
                    },
                ],
            },
        )
        .await?;
        let requester_name = shown(&row);
        let deciders = super::standing_role_holders_query(org.id, Role::UserAdmin)
            .all(&txn)
            .await?;
        for decider in &deciders {
            self.notify(
                &txn,
                decider,
                NotificationKind::JoinRequest,
                MailKind::RightsRequest,
                &[
                    ("first_name", &decider.first_name),
                    ("requester_name", &requester_name),
                    ("organisation_name", &org.name),
                    ("requested", joining_in(parse(&decider.language)?)),
                    ("reason", &row.reason),
                ],
                Some(row.id),
            )
            .await?;
        }
        txn.commit().await?;
        from_row(confirmed)
    }

    /// The organisation's confirmed requests to join, newest first, for its
    /// organisation and user administrators (unconfirmed ones are nobody's
    /// business yet).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn list_join_requests(
        &self,
        caller: &Caller,
        organisation_id: Uuid,
        open_only: bool,
        page_size: i32,
        page_token: &str,
    ) -> DomainResult<Page<JoinRequest>> {
        authorize(caller, Action::ReadJoinRequests, Target::organisation(organisation_id))?;
        use JoinRequestState::{Approved, Open, Rejected};
        let states: &[JoinRequestState] = if open_only {
            &[Open]
        } else {
            &[Open, Approved, Rejected]
        };
        let query = join_request::Entity::find()
            .filter(join_request::Column::OrganisationId.eq(organisation_id))
            .filter(join_request::Column::State.is_in(states.iter().map(|s| s.as_str())));
        let limit = paging::page_size(page_size, 50, 500)?;
        let (rows, next) = paging::keyset(
            &self.db,
            query,
            join_request::Column::Id,
            paging::Order::Descending,
            &format!("join_requests:{organisation_id}"),
            page_token,
            limit,
            |r| r.id,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(from_row).collect::<DomainResult<_>>()?,
            next_page_token: next,
        })
    }

    /// A user administrator approves (the user is created, in `unit_id`,
    /// through CreateUser's write) or rejects an open request; the person
    /// is told either way.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn decide_join_request(
        &self,
        caller: &Caller,
        id: Uuid,
        approve: bool,
        note: &str,
        unit_id: Option<Uuid>,
    ) -> DomainResult<DecidedJoinRequest> {
        // Input first, before anything is read.
        super::check_decision(caller, None, note)?;
        if unit_id.is_some() && !approve {
            return Err(DomainError::invalid("unit_id", "places the user made on approval only"));
        }
        let unknown = || DomainError::not_found("join request", id);
        let row = join_request::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .filter(|r| {
                caller.organisation_id() == Some(r.organisation_id) && r.state != JoinRequestState::Unconfirmed.as_str()
            })
            .ok_or_else(unknown)?;
        authorize(
            caller,
            Action::DecideJoinRequests,
            Target::organisation(row.organisation_id),
        )?;
        // CreateUser's field rules and authorisation (a scoped level places
        // users within its subtree only), before any write.
        let checked = match approve {
            true => Some(self.check_new_user(
                caller,
                NewUser {
                    organisation_id: row.organisation_id,
                    first_name: row.first_name.clone(),
                    surname: row.surname.clone(),
                    email: row.email.clone(),
                    birth_date: Some(row.birth_date.clone()),
                    unit_id,
                    language: Some(parse(&row.language)?),
                    ..Default::default()
                },
            )?),
            false => None,
        };
        let txn = crate::persistence::begin_write(&self.db).await?;
        let org = lock_organisation(&txn, row.organisation_id).await?;
        authorize(
            &super::access::caller_as_now(self, &txn, caller).await?,
            Action::DecideJoinRequests,
            Target::organisation(row.organisation_id),
        )?;
        let row = join_request::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(unknown)?;
        if row.state != JoinRequestState::Open.as_str() {
            return Err(DomainError::precondition(
                Reason::JoinRequestDecided,
                format!("the request was already {}", row.state.to_lowercase()),
            ));
        }
        // Approving admits someone through the organisation's join
        // requests, which it may have stopped taking since the request was
        // made (after a wave of unwanted ones, say): then its open requests
        // can be rejected, not approved. Read under the lock.
        if checked.is_some() {
            refuse_unless_allowed(&org)?;
        }
        let now = now_millis();
        let created = match checked {
            Some(checked) => Some(self.create_user_in(&txn, caller, checked).await?),
            None => None,
        };
        let mut active: join_request::ActiveModel = row.clone().into();
        active.state = Set(if approve {
            JoinRequestState::Approved
        } else {
            JoinRequestState::Rejected
        }
        .as_str()
        .into());
        active.decided_by = Set(Some(caller.actor()));
        active.decided_at = Set(Some(now));
        active.decision_note = Set((!note.is_empty()).then(|| note.to_owned()));
        active.user_id = Set(created.as_ref().map(|c| c.user.id));
        // Decided, the birth date has done its work (an approved user holds
        // it; a rejected person is owed no record of it).
        active.birth_date = Set(String::new());
        let decided = active.update(&txn).await?;
        let (subject, activity) = match &created {
            Some(created) => (Subject::User(created.user.id), Activity::JoinRequestApproved),
            None => (Subject::Organisation(org.id), Activity::JoinRequestRejected),
        };
        history::record(
            &txn,
            NewEvent {
                organisation_id: Some(org.id),
                subject,
                activity,
                caller,
                at: now,
                changes: vec![FieldChange {
                    field: "join_request".into(),
                    before: format!("{} ({})", shown(&row), row.id),
                    after: decided.state.clone(),
                }],
            },
        )
        .await?;
        let language: Language = parse(&row.language)?;
        self.enqueue_mail(
            &txn,
            Some(org.id),
            MailKind::RightsRequestDecided,
            &row.email,
            &format!("{} {}", row.first_name, row.surname),
            language,
            &[
                ("first_name", &row.first_name),
                ("organisation_name", &org.name),
                ("requested", joining_in(language)),
                ("decision", super::rights_requests::decision_word(language, approve)),
                ("note", if note.is_empty() { "-" } else { note }),
            ],
        )
        .await?;
        txn.commit().await?;
        Ok(DecidedJoinRequest {
            request: from_row(decided)?,
            activation_code: created.and_then(|c| c.activation_code),
        })
    }
}

/// What was asked for, in the words of the mail's language (the rights
/// request mails name it in a sentence).
fn joining_in(language: Language) -> &'static str {
    match language {
        Language::Da => "at blive tilknyttet organisationen",
        Language::Sv => "att ansluta till organisationen",
        Language::En => "to join the organisation",
    }
}

fn refuse_unless_allowed(org: &organisation::Model) -> DomainResult<()> {
    if org.join_requests_allowed {
        Ok(())
    } else {
        Err(DomainError::precondition(
            Reason::JoinRequestsNotAllowed,
            "the organisation does not take requests to join (its setting join_requests_allowed)",
        ))
    }
}
