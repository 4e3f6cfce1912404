//! Order → pickup (issue) → renew → revoke (R-CERT-2..4). Each write is one
//! transaction with its history event and its mail; a revocation or a
//! supersession publishes a new CRL right after its commit.

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QuerySelect,
};
use tracing::instrument;
use uuid::Uuid;

use super::csr::{CheckedCsr, check_csr};
use super::{Certificate, CertificateState, CertificateUsage, RevocationReason, to_certificate, usages_to_text};
use crate::Domain;
use crate::ca::{LeafProfile, SubjectAttribute, random_serial};
use crate::email::Email;
use crate::error::{DomainError, DomainResult, Reason};
use crate::mail::MailKind;
use crate::model::*;
use crate::normalise;
use crate::persistence::entities::{certificate, organisation, user};
use crate::persistence::history::{self, NewEvent, Subject, diff};
use crate::persistence::mapping::{parse, parse_list};
use crate::policy::{Action, Caller, Principal, Target, authorize};
use crate::secrets::{new_token, token_hash};
use crate::services::notifications::NotificationKind;
use crate::services::{lock_organisation, read_organisation};
use crate::validate::{self, Violations};

/// What `OrderCertificate` asks for.
#[derive(Debug, Clone)]
pub struct CertificateOrder {
    pub organisation_id: Uuid,
    pub kind: CertificateKind,
    /// The user of a user (EMPLOYEE) certificate.
    pub holder_id: Option<Uuid>,
    /// Who is told about pickup, expiry and revocation; by default the
    /// holder of a user certificate, the caller for the other kinds.
    pub contact_id: Option<Uuid>,
    /// What an organisation or system certificate is for; its common name.
    pub label: Option<String>,
    pub usages: Vec<CertificateUsage>,
    /// An e-mail address to put in the certificate: the holder's (or for
    /// the other kinds the contact person's), verified and plain ASCII.
    pub email: Option<String>,
    /// The client's request id (AIP-155): a retry finds the first order.
    pub request_id: Option<String>,
}

/// An issued certificate with what a holder installs.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub certificate: Certificate,
    pub certificate_pem: String,
    /// The CA certificate and the chain above it.
    pub chain_pem: String,
}

/// Why a holder's certificates end together (`end_holder_certificates_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HolderEnding {
    /// Deleted (or closed for an anonymous profile): every live
    /// certificate, HOLDER_LEFT.
    Left,
    /// Their signing right was withdrawn (R-CERT-2: signing needs it): the
    /// certificates that sign, CONTENT_INCORRECT. Before, they stayed valid
    /// for years, and the person went on signing for the organisation.
    SigningRightWithdrawn,
}

impl HolderEnding {
    fn reason(self) -> RevocationReason {
        match self {
            HolderEnding::Left => RevocationReason::HolderLeft,
            HolderEnding::SigningRightWithdrawn => RevocationReason::ContentIncorrect,
        }
    }
}

/// Whether the certificate (or order) can sign (`can_sign`).
fn signs(row: &certificate::Model) -> bool {
    super::usages_from_text(&row.usages).is_ok_and(|usages| can_sign(&usages))
}

/// Who manages certificates of a kind: user administrators the user
/// certificates, organisation administrators the organisation's own.
pub(crate) fn manage_action(kind: CertificateKind) -> Action {
    match kind {
        CertificateKind::Employee => Action::ManageUserCertificates,
        CertificateKind::Organisation | CertificateKind::System => Action::ManageOrganisationCertificates,
    }
}

/// The person a certificate's pickup and renewal belong to: the holder of
/// a user certificate, the contact person of the others.
pub(crate) fn recipient_of(row: &certificate::Model) -> Uuid {
    row.holder_id.unwrap_or(row.contact_id)
}

/// Checks the order's own fields, before any database work.
fn check_order(order: &CertificateOrder) -> DomainResult<()> {
    let mut v = Violations::default();
    if let Some(id) = &order.request_id {
        v.check("request_id", crate::validate::request_id(id));
    }
    if order.usages.is_empty() {
        v.add("usages", "must name at least one usage");
    }
    for (i, usage) in order.usages.iter().enumerate() {
        if !usage.fits(order.kind) {
            v.add(
                &format!("usages[{i}]"),
                format!(
                    "{} is not a usage of {} certificates",
                    usage.as_str(),
                    order.kind.as_str()
                ),
            );
        }
        if order.usages[..i].contains(usage) {
            v.add(&format!("usages[{i}]"), "must not repeat a usage");
        }
    }
    match order.kind {
        CertificateKind::Employee => {
            if order.holder_id.is_none() {
                v.add("holder_id", "is required for a user certificate");
            }
            if order.label.is_some() {
                v.add(
                    "label",
                    "must be empty for a user certificate (its name is the holder's)",
                );
            }
        }
        CertificateKind::Organisation | CertificateKind::System => {
            if order.holder_id.is_some() {
                v.add(
                    "holder_id",
                    "must be empty: an organisation or system certificate has no user holder",
                );
            }
            match &order.label {
                None => v.add(
                    "label",
                    "is required: what the certificate is for, e.g. Payroll integration",
                ),
                // Counted as stored (NFC can make one character three).
                Some(label) => v.check("label", validate::text(&normalise::nfc(label.trim()), 64)),
            }
        }
    }
    v.into_result()
}

/// The order's certificate e-mail address: plain ASCII, one address, and
/// the `whose` person's own (`owner`).
fn check_order_email(email: &str, owner: &user::Model, whose: &str) -> DomainResult<()> {
    let mut v = Violations::default();
    if !email.is_ascii() {
        v.add(
            "email",
            "must be plain ASCII (no æ, ø or å): a certificate carries its e-mail address as IA5String",
        );
    } else if let Err(rule) = Email::parse(email) {
        v.add("email", rule);
    } else if crate::email::login_key(email) != crate::email::login_key(&owner.email) {
        v.add("email", format!("must be the {whose}'s own e-mail address"));
    } else if owner.anonymous {
        // An anonymous person is named by a pseudonym (R-USR-10); their
        // address (often first.last@...) would name them again.
        v.add(
            "email",
            format!("must be empty for an anonymous {whose}: the certificate names them by a pseudonym, and an address would name them again"),
        );
    }
    v.into_result()
}

/// The address a certificate carries for `owner`: their own as stored,
/// with the domain in ASCII (Punycode), whatever case or form the order
/// typed. The order's text was compared by its key, so `ANNA@Firma.DK`
/// passed for anna@firma.dk and went into the certificate as typed.
/// `None` when the stored address does not read as one today (kept from
/// looser rules of an earlier release): no certificate carries it.
fn carried_email(owner: &user::Model) -> Option<String> {
    Email::parse(&owner.email)
        .ok()
        .map(|email| email.to_address().to_string())
}

fn whose_email(kind: CertificateKind) -> &'static str {
    if kind == CertificateKind::Employee {
        "holder"
    } else {
        "contact person"
    }
}

/// The request's CSR, checked (`check_csr`).
fn read_csr(csr_pem: &str) -> DomainResult<CheckedCsr> {
    check_csr(csr_pem).map_err(|rule| DomainError::invalid("csr_pem", rule))
}

/// Writes the signed certificate over its ORDERED `row`: `false` when the
/// row is no longer that order (a parallel pickup), `issued`'s serial is
/// taken, or the `holder` or `contact` person it was checked against is no
/// longer as read (their version).
///
/// The holder's row is read `FOR SHARE` within this statement (PostgreSQL;
/// SQLite has one writer at a time), so a pickup or renewal and a change of
/// its holder are in one order or the other, never interleaved.
/// Interleaved, a deletion read the order as ORDERED while this wrote it
/// ISSUED (a deleted person kept a valid certificate nothing could revoke),
/// and a deactivation, a withdrawn signing right or a changed address
/// committed while the certificate was signed did not stop it. Now a write
/// behind such a change finds the holder changed and writes nothing; a
/// change behind a write waits for it (and a deletion then revokes what it
/// issued). The contact person (another person, for an organisation or
/// system certificate) is checked but not locked: a second lock could
/// deadlock with a write holding both people in the other order (an import
/// chunk). The one change of a contact that writes their certificates, a
/// deletion handing user certificates to their holders
/// (`hand_over_contact_in`), meets this write on the certificate's own row
/// instead: whichever comes second waits for the other. A handover behind
/// this write hands the issued certificate over; a pickup behind a
/// handover finds the row changed and is refused (the contact it read is
/// gone), and goes through when tried again. A renewal's row is new, and no
/// handover sees it before it commits: they meet on the row it supersedes
/// (`supersede_renewed`).
async fn write_issued(
    txn: &DatabaseTransaction,
    row: &certificate::Model,
    issued: &certificate::Model,
    holder: Option<&user::Model>,
    contact: &user::Model,
) -> DomainResult<bool> {
    use sea_orm::sea_query::{ExprTrait, LockType, Query};
    let serial_in_use = Query::select()
        .expr(Expr::value(1))
        .from(certificate::Entity)
        .and_where(Expr::col(certificate::Column::Serial).eq(issued.serial.clone()))
        .to_owned();
    let mut written = certificate::Entity::update_many()
        .col_expr(certificate::Column::State, Expr::value(issued.state.clone()))
        .col_expr(certificate::Column::Serial, Expr::value(issued.serial.clone()))
        .col_expr(certificate::Column::Subject, Expr::value(issued.subject.clone()))
        .col_expr(certificate::Column::SearchText, Expr::value(issued.search_text.clone()))
        .col_expr(
            certificate::Column::KeyAlgorithm,
            Expr::value(issued.key_algorithm.clone()),
        )
        .col_expr(certificate::Column::NotBefore, Expr::value(issued.not_before))
        .col_expr(certificate::Column::NotAfter, Expr::value(issued.not_after))
        .col_expr(certificate::Column::Der, Expr::value(issued.der.clone()))
        .col_expr(
            certificate::Column::PublicKeyHash,
            Expr::value(issued.public_key_hash.clone()),
        )
        .col_expr(certificate::Column::Version, Expr::value(issued.version))
        .col_expr(certificate::Column::UpdatedAt, Expr::value(issued.updated_at))
        .filter(certificate::Column::Id.eq(row.id))
        .filter(certificate::Column::State.eq(CertificateState::Ordered.as_str()))
        .filter(certificate::Column::Version.eq(row.version))
        .filter(Expr::exists(serial_in_use).not());
    let as_read = |person: &user::Model| {
        Query::select()
            .expr(Expr::value(1))
            .from(user::Entity)
            .and_where(Expr::col(user::Column::Id).eq(person.id))
            .and_where(Expr::col(user::Column::Version).eq(person.version))
            .to_owned()
    };
    if let Some(holder) = holder {
        let mut holder_as_read = as_read(holder);
        if crate::persistence::is_postgres(txn) {
            holder_as_read.lock(LockType::Share);
        }
        written = written.filter(Expr::exists(holder_as_read));
    }
    if holder.is_none_or(|h| h.id != contact.id) {
        written = written.filter(Expr::exists(as_read(contact)));
    }
    Ok(written.exec(txn).await?.rows_affected == 1)
}

/// The write that ends the certificate `row` as `state` (REVOKED or
/// SUPERSEDED) for `reason` at `now`, one version on from the row as it
/// is; each caller adds the condition it holds under (its version, or its
/// state as read).
fn ending(
    row: &certificate::Model,
    state: CertificateState,
    reason: RevocationReason,
    now: Millis,
) -> sea_orm::UpdateMany<certificate::Entity> {
    use sea_orm::sea_query::ExprTrait;
    let mut update = certificate::Entity::update_many();
    // A certificate from before keys were hashed gets its key's hash as it
    // ends: a compromised key is refused by that hash
    // (`ensure_key_may_be_certified`).
    if row.public_key_hash.is_none()
        && let Some(hash) = row.der.as_deref().and_then(key_hash_of_der)
    {
        update = update.col_expr(certificate::Column::PublicKeyHash, Expr::value(hash));
    }
    update
        .col_expr(certificate::Column::State, Expr::value(state.as_str()))
        .col_expr(certificate::Column::RevokedAt, Expr::value(now))
        .col_expr(certificate::Column::RevocationReason, Expr::value(reason.as_str()))
        // Not the version as read plus one: a caller that holds only under
        // the state as read (a renewal's supersession) may write over a
        // change committed since (a user certificate's new contact person,
        // whom the renewal takes on) that moved the version on, and the row
        // would end under the ETag that change handed out.
        .col_expr(
            certificate::Column::Version,
            Expr::col(certificate::Column::Version).add(1),
        )
        .col_expr(certificate::Column::UpdatedAt, Expr::value(now))
        .filter(certificate::Column::Id.eq(row.id))
}

/// Ends the certificate `old_id` that the just issued `renewal` renews as
/// SUPERSEDED, in the renewal's transaction, with its history event.
///
/// The renewal copied the old certificate's contact person as it read the
/// row, unlocked: locked at the start, the row would be taken before the
/// holder (`write_issued`), the reverse of DeleteUser's order. So the
/// supersession holds only while that person is still the old row's
/// contact. Held on the state alone, it went through behind a
/// ChangeCertificateContact or a deletion's handover
/// (`hand_over_contact_in`) committed meanwhile, which no serial order
/// allows: an organisation certificate's former contact person renewed it
/// after it had been handed to someone else (told it was theirs now), and
/// a user certificate's renewal kept the contact person the change had
/// replaced, a deleted one behind a handover.
///
/// When it does not hold, the old row is read again, locked (after the
/// holder, as the supersession itself takes it): ended meanwhile, the
/// renewal is refused; renewed by someone who is no longer its recipient
/// (an organisation or system certificate handed to another contact
/// person), refused as if they had come after the change. A user
/// certificate's recipient is its holder: its renewal takes on the
/// contact person as they are now (its e-mail address is the holder's,
/// which a change of contact leaves as it is).
async fn supersede_renewed(
    txn: &DatabaseTransaction,
    caller: &Caller,
    old_id: Uuid,
    renewal: &mut certificate::Model,
    now: Millis,
) -> DomainResult<()> {
    let supersede = |old: &certificate::Model, contact_id: Uuid| {
        ending(old, CertificateState::Superseded, RevocationReason::Superseded, now)
            .filter(certificate::Column::State.eq(CertificateState::Issued.as_str()))
            .filter(certificate::Column::ContactId.eq(contact_id))
    };
    let mut old = certificate::Entity::find_by_id(old_id)
        .one(txn)
        .await?
        .ok_or_else(|| DomainError::not_found("certificate", old_id))?;
    if supersede(&old, renewal.contact_id).exec(txn).await?.rows_affected != 1 {
        old = certificate::Entity::find_by_id(old_id)
            .lock_exclusive()
            .one(txn)
            .await?
            .ok_or_else(|| DomainError::not_found("certificate", old_id))?;
        if old.state != CertificateState::Issued.as_str() {
            return Err(DomainError::precondition(
                Reason::CertificateNotRenewable,
                "the certificate being renewed is no longer ISSUED",
            ));
        }
        ensure_renewer(txn, caller, &old).await?;
        certificate::Entity::update_many()
            .col_expr(certificate::Column::ContactId, Expr::value(old.contact_id))
            .filter(certificate::Column::Id.eq(renewal.id))
            .exec(txn)
            .await?;
        renewal.contact_id = old.contact_id;
        // Under the row's lock nothing can come between; were it to, the
        // renewal must not commit beside an old certificate still ISSUED.
        if supersede(&old, renewal.contact_id).exec(txn).await?.rows_affected != 1 {
            return Err(DomainError::Aborted {
                reason: Reason::ChangedMeanwhile,
                message: "the certificate being renewed changed while it was renewed; try again".into(),
            });
        }
    }
    let mut changes = Vec::new();
    diff(&mut changes, "state", &old.state, CertificateState::Superseded.as_str());
    diff(&mut changes, "superseded_by", "", renewal.id.to_string());
    history::record(txn, event(&old, Activity::CertificateSuperseded, caller, now, changes)).await?;
    Ok(())
}

/// An order about to be signed, with what its subject is built from, as
/// the join found them: checked only by `people`, after the caller's own
/// checks, so a caller who may not pick this order up learns nothing of
/// its holder.
struct OrderToSign {
    row: certificate::Model,
    organisation: Option<organisation::Model>,
    holder: Option<user::Model>,
}

impl OrderToSign {
    /// The order, its organisation, and its holder (`None` for organisation
    /// and system certificates), who must still be in the organisation.
    fn people(self) -> DomainResult<(certificate::Model, organisation::Model, Option<user::Model>)> {
        let Self {
            row,
            organisation,
            holder,
        } = self;
        let organisation = organisation.ok_or_else(|| DomainError::not_found("organisation", row.organisation_id))?;
        let holder = match row.holder_id {
            Some(id) => Some(person_in(organisation.id, id, holder)?),
            None => None,
        };
        Ok((row, organisation, holder))
    }
}

/// The certificate matching `filter` with its organisation and holder, in
/// one statement: a pickup is a handful of round trips, and three of them
/// were these reads. `None` when no certificate matches. Read without a
/// lock: `write_issued` checks the holder again, locked.
async fn order_to_sign(
    db: &impl ConnectionTrait,
    filter: impl sea_orm::sea_query::IntoCondition,
) -> DomainResult<Option<OrderToSign>> {
    Ok(certificate::Entity::find()
        .filter(filter)
        .find_also_related(organisation::Entity)
        .find_also_related(user::Entity)
        .one(db)
        .await?
        .map(|(row, organisation, holder)| OrderToSign {
            row,
            organisation,
            holder,
        }))
}

async fn user_in(db: &impl ConnectionTrait, organisation_id: Uuid, id: Uuid) -> DomainResult<user::Model> {
    person_in(organisation_id, id, user::Entity::find_by_id(id).one(db).await?)
}

/// User `id` as read (`found`), if they are a person of the organisation:
/// in it and not deleted.
fn person_in(organisation_id: Uuid, id: Uuid, found: Option<user::Model>) -> DomainResult<user::Model> {
    found
        .filter(|u| u.organisation_id == organisation_id && u.state != UserState::Deleted.as_str())
        .ok_or_else(|| DomainError::not_found("user", id))
}

/// User `id` as `person_in` takes them, read FOR SHARE (PostgreSQL; SQLite
/// has one writer at a time): a deletion or deactivation in progress is
/// waited for and read as it committed, and one that comes later waits for
/// this transaction and then sees what it wrote (a deletion hands the user
/// certificates the person looks after to their holders). The caller holds
/// the organisation's lock first: DeleteUser and the other changes of a
/// person lock the organisation, then the person.
async fn person_in_locked(txn: &DatabaseTransaction, organisation_id: Uuid, id: Uuid) -> DomainResult<user::Model> {
    person_in(
        organisation_id,
        id,
        user::Entity::find_by_id(id).lock_shared().one(txn).await?,
    )
}

fn ensure_active(person: &user::Model, role: &str) -> DomainResult<()> {
    if person.state != UserState::Active.as_str() {
        return Err(DomainError::precondition(
            Reason::UserNotActive,
            format!(
                "the {role} must be ACTIVE (activated and not deactivated); the user is {}",
                person.state
            ),
        ));
    }
    Ok(())
}

/// Whether the contact person of `row` (as read, `None` when the row is
/// gone) can still act for it: not deleted, and, where they are its
/// recipient (an organisation or system certificate), ACTIVE (a
/// deactivated person cannot sign in). Otherwise the pickup or renewal is
/// refused with what to do: before, a deleted contact failed it NOT_FOUND
/// for ever, and nothing could name another.
fn contact_can_act(row: &certificate::Model, contact: Option<&user::Model>) -> DomainResult<()> {
    let state = contact.map_or(UserState::Deleted.as_str(), |c| c.state.as_str());
    let problem = if state == UserState::Deleted.as_str() {
        "was deleted".to_owned()
    } else if row.holder_id.is_none() && state != UserState::Active.as_str() {
        format!("is {state}, not ACTIVE")
    } else {
        return Ok(());
    };
    Err(DomainError::precondition(
        Reason::CertificateContactNotActive,
        format!(
            "the certificate's contact person {problem}; change the contact person with ChangeCertificateContact first"
        ),
    ))
}

/// The contact person of `row`, who must still be able to act for it
/// (`contact_can_act`).
async fn contact_of(db: &impl ConnectionTrait, row: &certificate::Model) -> DomainResult<user::Model> {
    let contact = user::Entity::find_by_id(row.contact_id)
        .one(db)
        .await?
        .filter(|c| c.organisation_id == row.organisation_id);
    contact_can_act(row, contact.as_ref())?;
    contact.ok_or_else(|| DomainError::not_found("user", row.contact_id))
}

/// The refusal of a pickup or renewal of `row` by a caller who is not its
/// recipient (`denial`). A caller who manages certificates of its kind
/// learns instead when the recipient is a contact person who can no
/// longer act (`contact_can_act`), and what to do about it.
async fn not_the_recipient(
    db: &impl ConnectionTrait,
    caller: &Caller,
    row: &certificate::Model,
    denial: &str,
) -> DomainResult<DomainError> {
    let manages = authorize(
        caller,
        manage_action(parse(&row.kind)?),
        Target::organisation(row.organisation_id),
    )
    .is_ok();
    if row.holder_id.is_none() && manages {
        let contact = user::Entity::find_by_id(row.contact_id).one(db).await?;
        if let Err(gone) = contact_can_act(row, contact.as_ref()) {
            return Ok(gone);
        }
    }
    Ok(DomainError::denied(denial))
}

/// The caller may renew `row`: the CSR's key becomes the certificate's,
/// and signed for anyone but the one it is for (its holder, or the contact
/// person of an organisation or system certificate), an administrator
/// would hold a valid certificate in another person's name. As at pickup,
/// the recipient renews, signed in as themselves.
async fn ensure_renewer(db: &impl ConnectionTrait, caller: &Caller, row: &certificate::Model) -> DomainResult<()> {
    if caller.user_id() == Some(recipient_of(row)) {
        return Ok(());
    }
    Err(not_the_recipient(
        db,
        caller,
        row,
        "a certificate is renewed by its holder (or, for an organisation or system certificate, its contact person) signed in as themselves, over their own key; an administrator orders a new certificate instead",
    )
    .await?)
}

fn ensure_kind_allowed(org: &organisation::Model, kind: CertificateKind) -> DomainResult<()> {
    let allowed: Vec<CertificateKind> = parse_list(&org.certificate_kinds)?;
    if !allowed.contains(&kind) {
        return Err(DomainError::precondition(
            Reason::CertificateKindNotAllowed,
            format!(
                "the organisation does not issue {} certificates; an organisation administrator allows the kind in the settings",
                kind.as_str()
            ),
        ));
    }
    Ok(())
}

/// The rules that hold at order and again at issue: the holder is active
/// and may sign when the certificate signs; a certificate e-mail is the
/// person's own, verified address.
fn check_people(
    kind: CertificateKind,
    usages: &[CertificateUsage],
    email: Option<&str>,
    holder: Option<&user::Model>,
    contact: &user::Model,
) -> DomainResult<()> {
    if let Some(holder) = holder {
        ensure_active(holder, "holder")?;
        if can_sign(usages) && !holder.signing_right {
            return Err(DomainError::precondition(
                Reason::SigningRightMissing,
                if usages.contains(&CertificateUsage::Signing) {
                    "SIGNING needs the holder's signing right; a user administrator grants it on the user"
                } else {
                    "AUTHENTICATION together with EMAIL_ENCRYPTION makes a certificate that signs e-mail (S/MIME), which needs the holder's signing right; order them as two certificates, or a user administrator grants the right"
                },
            ));
        }
    }
    if let Some(email) = email {
        let owner = holder.unwrap_or(contact);
        let whose = whose_email(kind);
        // The order checked the address (`check_order_email`); a pickup
        // finds it changed when the person's address changed since.
        if crate::email::login_key(email) != crate::email::login_key(&owner.email) {
            return Err(DomainError::precondition(
                Reason::EmailNotVerified,
                format!(
                    "the order's e-mail address is no longer the {whose}'s verified address; delete the order and order again"
                ),
            ));
        }
        if !owner.email_verified {
            return Err(DomainError::precondition(
                Reason::EmailNotVerified,
                format!(
                    "the {whose}'s e-mail address is not verified yet; it is verified by activation or by the link mailed on a change"
                ),
            ));
        }
    }
    Ok(())
}

/// Deletes an order not yet picked up, with its history event (why, when
/// not the caller's choice): whether it was still an order. One rule for
/// DeleteCertificateOrder, a holder who leaves, and an order whose pickup
/// token expired unused.
pub(crate) async fn delete_order_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    row: &certificate::Model,
    now: Millis,
    why: Option<&str>,
) -> DomainResult<bool> {
    // Still as read: a new contact person's pickup (a new token, a new
    // end, mailed) committed meanwhile is not deleted under them.
    let deleted = certificate::Entity::delete_many()
        .filter(certificate::Column::Id.eq(row.id))
        .filter(certificate::Column::State.eq(CertificateState::Ordered.as_str()))
        .filter(certificate::Column::Version.eq(row.version))
        .exec(txn)
        .await?;
    if deleted.rows_affected != 1 {
        return Ok(false);
    }
    let mut changes = Vec::new();
    diff(&mut changes, "state", &row.state, "");
    if let Some(why) = why {
        diff(&mut changes, "reason", "", why);
    }
    history::record(txn, event(row, Activity::CertificateOrderDeleted, caller, now, changes)).await?;
    Ok(true)
}

fn event<'a>(
    row: &certificate::Model,
    activity: Activity,
    caller: &'a Caller,
    at: Millis,
    changes: Vec<FieldChange>,
) -> NewEvent<'a> {
    NewEvent {
        organisation_id: Some(row.organisation_id),
        subject: Subject::Certificate(row.id),
        activity,
        caller,
        at,
        changes,
    }
}

impl Domain {
    /// R-CERT-2: records the order and mails its single-use pickup token to
    /// the holder (or contact person), with an in-app notification.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn order_certificate(&self, caller: &Caller, order: CertificateOrder) -> DomainResult<Certificate> {
        self.ca()?;
        check_order(&order)?;
        authorize(
            caller,
            manage_action(order.kind),
            Target::organisation(order.organisation_id),
        )?;
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        // Locked before the people, the order DeleteUser and the other
        // changes of a person take them in (an import's chunk holds it
        // while it writes people in its own order): the two people locked
        // below cannot deadlock with those.
        let org = lock_organisation(&txn, order.organisation_id).await?;
        // A retry (under the lock, so a first call still writing is waited
        // for) gets the order the first call made, as it is now: no second
        // order, no second pickup mail.
        let fingerprint = order
            .request_id
            .as_ref()
            .map(|_| crate::services::request_fingerprint(caller, &order));
        if let Some(request_id) = &order.request_id
            && let Some(earlier) = certificate::Entity::find()
                .filter(certificate::Column::OrganisationId.eq(org.id))
                .filter(certificate::Column::CreateRequestId.eq(request_id.as_str()))
                .one(&txn)
                .await?
        {
            crate::services::ensure_same_request(
                earlier.create_request_hash.as_deref(),
                fingerprint.as_deref().unwrap_or_default(),
                "certificate order",
            )?;
            return to_certificate(earlier);
        }
        ensure_kind_allowed(&org, order.kind)?;
        // The holder and the contact person are read FOR SHARE
        // (`person_in_locked`), so a deletion in progress is waited for and
        // refuses the order; a deletion behind it waits and then ends the
        // order with the rest (its holder's) or, for a user certificate,
        // hands it to its holder (its contact's). Unlocked, an order could
        // slip behind a deletion's look at the person's certificates: an
        // order, and a pickup mail, for a person who had left, or an order
        // whose contact had left.
        let holder = match order.holder_id {
            Some(id) => Some(person_in_locked(&txn, org.id, id).await?),
            None => None,
        };
        let contact_id = match (order.contact_id, &holder, caller.user_id()) {
            (Some(id), _, _) => id,
            (None, Some(holder), _) => holder.id,
            (None, None, Some(me)) => me,
            // Members always have a user; only a system caller has none.
            (None, None, None) => {
                return Err(DomainError::Internal(
                    "a system caller's order names its contact person".into(),
                ));
            }
        };
        let contact = match &holder {
            Some(holder) if holder.id == contact_id => holder.clone(),
            _ => person_in_locked(&txn, org.id, contact_id).await?,
        };
        ensure_active(&contact, "contact person")?;
        let email = match order.email.as_deref().map(str::trim) {
            Some(typed) => {
                let owner = holder.as_ref().unwrap_or(&contact);
                check_order_email(typed, owner, whose_email(order.kind))?;
                // The person's record is at fault, not the request: an
                // address kept from looser rules of an earlier release.
                Some(carried_email(owner).ok_or_else(|| {
                    DomainError::precondition(
                        Reason::EmailNotVerified,
                        format!(
                            "the {}'s stored address is not one a certificate can carry; correct it on the person first",
                            whose_email(order.kind)
                        ),
                    )
                })?)
            }
            None => None,
        };
        check_people(order.kind, &order.usages, email.as_deref(), holder.as_ref(), &contact)?;

        let token = new_token();
        let expires_at = crate::mail::link_end(now, self.settings.certificates.pickup_ttl_ms);
        // Nothing of an issued certificate yet: those columns stay empty.
        let row = certificate::Model {
            id: Uuid::now_v7(),
            organisation_id: org.id,
            kind: order.kind.as_str().into(),
            state: CertificateState::Ordered.as_str().into(),
            holder_id: holder.as_ref().map(|h| h.id),
            contact_id: contact.id,
            label: order.label.as_deref().map(|l| normalise::nfc(l.trim())),
            usages: usages_to_text(&order.usages),
            email,
            pickup_token_hash: Some(token_hash(&token)),
            pickup_expires_at: Some(expires_at),
            version: 1,
            created_at: now,
            updated_at: now,
            create_request_id: order.request_id.clone(),
            create_request_hash: fingerprint,
            ..Default::default()
        };
        insert(&txn, &row).await?;
        let mut changes = Vec::new();
        diff(&mut changes, "kind", "", &row.kind);
        diff(&mut changes, "usages", "", &row.usages);
        diff(
            &mut changes,
            "holder_id",
            "",
            row.holder_id.map(|h| h.to_string()).unwrap_or_default(),
        );
        diff(&mut changes, "contact_id", "", row.contact_id.to_string());
        diff(&mut changes, "label", "", row.label.clone().unwrap_or_default());
        diff(&mut changes, "email", "", row.email.clone().unwrap_or_default());
        history::record(&txn, event(&row, Activity::CertificateOrdered, caller, now, changes)).await?;

        let recipient = holder.as_ref().unwrap_or(&contact);
        self.send_pickup(&txn, &org, &row, recipient, &token, expires_at)
            .await?;
        txn.commit().await?;
        to_certificate(row)
    }

    /// Mails `recipient` the single-use pickup token of the ORDERED `row`,
    /// with an in-app notification, in the caller's transaction.
    async fn send_pickup(
        &self,
        txn: &DatabaseTransaction,
        org: &organisation::Model,
        row: &certificate::Model,
        recipient: &user::Model,
        token: &str,
        expires_at: Millis,
    ) -> DomainResult<()> {
        let link = self.settings.certificates.pickup_url_template.replace("{token}", token);
        let expires_on = crate::mail::link_end_text(expires_at, self.settings.certificates.pickup_ttl_ms);
        let what = describe(row);
        let vars = [
            ("first_name", recipient.first_name.as_str()),
            ("organisation_name", org.name.as_str()),
            ("certificate", what.as_str()),
            ("pickup_link", link.as_str()),
            ("pickup_token", token),
            ("expires_on", expires_on.as_str()),
        ];
        // The token goes by mail only: an in-app notification is stored
        // and listed, so it says that a certificate waits, not how to take it.
        self.enqueue_mail_until(
            txn,
            Some(org.id),
            MailKind::CertificatePickup,
            &recipient.email,
            &format!("{} {}", recipient.first_name, recipient.surname),
            parse(&recipient.language)?,
            &vars,
            Some(expires_at),
        )
        .await?;
        self.notify_in_app(
            txn,
            recipient,
            NotificationKind::Certificate,
            MailKind::CertificateReady,
            &vars[..4],
            Some(row.id),
        )
        .await
    }

    /// R-CERT-3: another contact person for a certificate, e.g. for one
    /// whose contact left: by those who order certificates of its kind;
    /// the new contact is an ACTIVE person of its organisation and the
    /// certificate ORDERED or ISSUED. They are told as at an order: the
    /// recipient of an ordered organisation or system certificate gets a
    /// new pickup token (the one mailed to the old contact stops working),
    /// otherwise a notice that the certificate is theirs to look after.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn change_certificate_contact(
        &self,
        caller: &Caller,
        id: Uuid,
        contact_id: Uuid,
        etag: &str,
    ) -> DomainResult<Certificate> {
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = self
            .change_certificate_contact_in(&txn, caller, id, contact_id, etag, now)
            .await?;
        txn.commit().await?;
        to_certificate(row)
    }

    /// ChangeCertificateContact's rules and writes in the caller's
    /// transaction; returns the row as written.
    pub(crate) async fn change_certificate_contact_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        id: Uuid,
        contact_id: Uuid,
        etag: &str,
        now: Millis,
    ) -> DomainResult<certificate::Model> {
        let row = self.visible_certificate(txn, caller, id).await?;
        authorize(
            caller,
            manage_action(parse(&row.kind)?),
            Target::organisation(row.organisation_id),
        )?;
        crate::services::organisations::check_etag("certificate", etag, row.version)?;
        let state: CertificateState = parse(&row.state)?;
        match state {
            CertificateState::Ordered | CertificateState::Issued => {}
            CertificateState::Expired => {
                return Err(DomainError::precondition(
                    Reason::CertificateNotIssued,
                    "the certificate has expired; order a new one with its new contact person",
                ));
            }
            CertificateState::Revoked | CertificateState::Superseded => {
                return Err(DomainError::precondition(
                    Reason::CertificateRevoked,
                    format!(
                        "the certificate is {}, which is final; order a new one with its new contact person",
                        row.state
                    ),
                ));
            }
        }
        if contact_id == row.contact_id {
            return Err(DomainError::invalid(
                "contact_id",
                "is already the certificate's contact person",
            ));
        }
        // The new contact is read locked (`person_in_locked`, after the
        // organisation's lock). Read unlocked, a person whose deletion was
        // in progress was still ACTIVE, the deletion had already looked for
        // the certificates it hands over, and the certificate was left with
        // a deleted contact: its pickup and renewal refused
        // (CERTIFICATE_CONTACT_NOT_ACTIVE).
        let org = lock_organisation(txn, row.organisation_id).await?;
        let contact = person_in_locked(txn, org.id, contact_id).await?;
        ensure_active(&contact, "contact person")?;
        // An organisation or system certificate that carries an e-mail
        // address carries its contact person's: it moves to the new one,
        // whose address must be one a certificate can carry, verified (left
        // as it was, every pickup and renewal found it no longer the
        // contact's: EMAIL_NOT_VERIFIED, "order again").
        let email = match (&row.email, row.holder_id) {
            (Some(_), None) => {
                let carried = carried_email(&contact).unwrap_or_default();
                if check_order_email(&carried, &contact, "contact person").is_err() {
                    return Err(DomainError::invalid(
                        "contact_id",
                        "names a person whose e-mail address this certificate cannot carry (it carries its contact person's address, which must be plain ASCII and no anonymous person's)",
                    ));
                }
                if !contact.email_verified {
                    return Err(DomainError::precondition(
                        Reason::EmailNotVerified,
                        "the certificate carries its contact person's e-mail address, and the new contact person's is not verified yet",
                    ));
                }
                Some(carried)
            }
            _ => row.email.clone(),
        };
        // The pickup of an ordered organisation or system certificate is
        // the contact person's: theirs now, over a token of their own.
        let pickup = (row.holder_id.is_none() && state == CertificateState::Ordered).then(|| {
            (
                new_token(),
                crate::mail::link_end(now, self.settings.certificates.pickup_ttl_ms),
            )
        });
        let changed = certificate::Model {
            contact_id: contact.id,
            email: email.clone(),
            pickup_token_hash: pickup
                .as_ref()
                .map_or(row.pickup_token_hash.clone(), |(token, _)| Some(token_hash(token))),
            pickup_expires_at: pickup.as_ref().map_or(row.pickup_expires_at, |(_, at)| Some(*at)),
            version: row.version + 1,
            updated_at: now,
            ..row.clone()
        };
        let written = certificate::Entity::update_many()
            .col_expr(certificate::Column::ContactId, Expr::value(changed.contact_id))
            .col_expr(certificate::Column::Email, Expr::value(changed.email.clone()))
            .col_expr(
                certificate::Column::PickupTokenHash,
                Expr::value(changed.pickup_token_hash.clone()),
            )
            .col_expr(
                certificate::Column::PickupExpiresAt,
                Expr::value(changed.pickup_expires_at),
            )
            .col_expr(certificate::Column::Version, Expr::value(changed.version))
            .col_expr(certificate::Column::UpdatedAt, Expr::value(now))
            .filter(certificate::Column::Id.eq(row.id))
            .filter(certificate::Column::Version.eq(row.version))
            .exec(txn)
            .await?;
        if written.rows_affected != 1 {
            return Err(DomainError::stale_etag("certificate"));
        }
        let mut changes = Vec::new();
        diff(
            &mut changes,
            "contact_id",
            row.contact_id.to_string(),
            contact.id.to_string(),
        );
        diff(
            &mut changes,
            "email",
            row.email.clone().unwrap_or_default(),
            changed.email.clone().unwrap_or_default(),
        );
        if pickup.is_some() {
            diff(
                &mut changes,
                "pickup_expires_at",
                crate::services::users::opt_time(row.pickup_expires_at),
                crate::services::users::opt_time(changed.pickup_expires_at),
            );
        }
        history::record(
            txn,
            event(&row, Activity::CertificateContactChanged, caller, now, changes),
        )
        .await?;
        match &pickup {
            Some((token, expires_at)) => {
                self.send_pickup(txn, &org, &changed, &contact, token, *expires_at)
                    .await?
            }
            None => {
                let what = describe(&changed);
                self.notify(
                    txn,
                    &contact,
                    NotificationKind::Certificate,
                    MailKind::CertificateContact,
                    &[
                        ("first_name", contact.first_name.as_str()),
                        ("organisation_name", org.name.as_str()),
                        ("certificate", what.as_str()),
                    ],
                    Some(row.id),
                )
                .await?
            }
        }
        // The person it was taken from is told, unless they made the change
        // themselves or have left: a contact moved away without a word is
        // how a certificate's expiry and revocation notices go astray.
        if caller.acting_user_id() != Some(row.contact_id)
            && let Some(previous) = user::Entity::find_by_id(row.contact_id).one(txn).await?
            && parse::<UserState>(&previous.state)? != UserState::Deleted
        {
            let what = describe(&changed);
            let new_contact_name = format!("{} {}", contact.first_name, contact.surname);
            self.notify(
                txn,
                &previous,
                NotificationKind::Certificate,
                MailKind::CertificateContactReplaced,
                &[
                    ("first_name", previous.first_name.as_str()),
                    ("organisation_name", org.name.as_str()),
                    ("certificate", what.as_str()),
                    ("new_contact_name", new_contact_name.as_str()),
                ],
                Some(row.id),
            )
            .await?;
        }
        Ok(changed)
    }

    /// R-CERT-4: the holder (or contact person) picks up their certificate:
    /// signed in as themselves, with the single-use token from the mail and
    /// a CSR for their own key.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn issue_certificate(
        &self,
        caller: &Caller,
        token: &str,
        csr_pem: &str,
    ) -> DomainResult<IssuedCertificate> {
        let ca = self.ca()?;
        if token.trim().is_empty() {
            return Err(DomainError::invalid("token", "is required"));
        }
        let csr = read_csr(csr_pem)?;
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let unknown = || {
            DomainError::precondition(
                Reason::CertificatePickupUnknown,
                "this pickup token is not known; check it, or ask for the certificate to be ordered again",
            )
        };
        let order = order_to_sign(&txn, certificate::Column::PickupTokenHash.eq(token_hash(token.trim())))
            .await?
            .ok_or_else(unknown)?;
        let row = &order.row;
        // A token of another organisation reads as unknown, like a wrong one.
        if caller.organisation_id() != Some(row.organisation_id) {
            return Err(unknown());
        }
        if caller.user_id() != Some(recipient_of(row)) {
            return Err(not_the_recipient(
                &txn,
                caller,
                row,
                "this certificate is picked up by its holder (or, for an organisation or system certificate, its contact person), signed in as themselves",
            )
            .await?);
        }
        if row.state != CertificateState::Ordered.as_str() {
            return Err(DomainError::precondition(
                Reason::CertificatePickupUsed,
                "this pickup token was already used; the certificate is issued",
            ));
        }
        if row.pickup_expires_at.is_none_or(|at| at <= now) {
            return Err(DomainError::precondition(
                Reason::CertificatePickupExpired,
                "this pickup token has expired; delete the order and order the certificate again",
            ));
        }
        let (issued, superseded) = self.issue_in(&txn, ca, caller, order, &csr, now).await?;
        txn.commit().await?;
        crate::metrics::certificate_issued(&issued.kind);
        if superseded {
            self.publish_crl_after_commit().await;
        }
        Ok(IssuedCertificate {
            certificate_pem: crate::ca::pem("CERTIFICATE", issued.der.as_deref().unwrap_or_default()),
            chain_pem: ca.chain_pem().to_owned(),
            certificate: to_certificate(issued)?,
        })
    }

    /// Signs the certificate of the ORDERED `row` over the CSR's key, with
    /// the subject built from our records, and supersedes what it renews.
    /// Returns the row as written and whether something was superseded.
    async fn issue_in(
        &self,
        txn: &DatabaseTransaction,
        ca: &crate::ca::CertificateAuthority,
        caller: &Caller,
        order: OrderToSign,
        csr: &CheckedCsr,
        now: Millis,
    ) -> DomainResult<(certificate::Model, bool)> {
        let (row, org, holder) = order.people()?;
        let kind: CertificateKind = parse(&row.kind)?;
        let usages = super::usages_from_text(&row.usages)?;
        ensure_kind_allowed(&org, kind)?;
        // A user certificate's contact person is by default its holder:
        // read once.
        let contact = match &holder {
            Some(holder) if holder.id == row.contact_id => holder.clone(),
            _ => contact_of(txn, &row).await?,
        };
        check_people(kind, &usages, row.email.as_deref(), holder.as_ref(), &contact)?;
        if !csr.key.encrypts() && usages.iter().any(|u| u.encrypts()) {
            return Err(DomainError::invalid(
                "csr_pem",
                "has an Ed25519 key, which cannot encrypt; use P-256, P-384 or RSA for an encryption usage",
            ));
        }

        let identity = first_of_renewals(txn, &row).await?;
        let subject = subject_of(&org, kind, holder.as_ref(), &row, identity);
        let (key_usages, extended_key_usages) = key_usages(&usages, csr.key.is_rsa());
        let validity = self.settings.certificates.validity(kind);
        // Five minutes back: a relying party whose clock runs a little
        // behind accepts the certificate at once.
        let not_before = now - 5 * 60 * 1000;
        // Never past the CA's own end: a relying party rejects a chain with
        // an expired CA, so a longer certificate would stop working early,
        // with its expiry warnings and renewal still years away.
        let not_after = validity.ends(now).min(ca.not_after());
        let key_hash = public_key_hash(&csr.public_key_der);
        ensure_key_may_be_certified(txn, &row, &key_hash).await?;
        let subject_text = subject_line(&subject, escape_rfc4514);
        // Searched as written, without the escapes: "Firma, A/S" finds
        // the organisation whose name has a comma.
        let searched_text = subject_line(&subject, str::to_owned);
        // R-CERT-3: a random serial no certificate has, checked by the
        // UPDATE that writes it (`NOT EXISTS`), not by a query of its own:
        // one round trip fewer per pickup. A serial taken by a committed
        // certificate signs again with another; one taken at the same moment
        // by a parallel pickup (not yet visible to `NOT EXISTS`) trips the
        // unique index and fails this call as an internal error, with
        // nothing written. Either is a 2^-126 chance per certificate.
        let mut tries = 0;
        let mut issued = loop {
            tries += 1;
            let serial = random_serial();
            let der = ca
                .issue(
                    &LeafProfile {
                        subject: subject.clone(),
                        email: row.email.clone(),
                        key_usages: key_usages.clone(),
                        extended_key_usages: extended_key_usages.clone(),
                        not_before,
                        not_after,
                        serial: serial.clone(),
                    },
                    &csr.public_key_der,
                )
                .map_err(DomainError::Internal)?;
            // The row as the UPDATE writes it (it matches exactly this
            // version), so it is not read back.
            let issued = certificate::Model {
                state: CertificateState::Issued.as_str().into(),
                serial: Some(hex::encode(&serial)),
                search_text: Some(normalise::key(&searched_text)),
                subject: Some(subject_text.clone()),
                key_algorithm: Some(csr.key.describe()),
                not_before: Some(not_before),
                not_after: Some(not_after),
                der: Some(der),
                public_key_hash: Some(key_hash.clone()),
                version: row.version + 1,
                updated_at: now,
                ..row.clone()
            };
            if write_issued(txn, &row, &issued, holder.as_ref(), &contact).await? {
                break issued;
            }
            // Changed while this was signed (see `write_issued`): the rules
            // again, over the people as they are now, say why not; a change
            // that breaks none (a new name) is signed again by a retry.
            let holder_now = match row.holder_id {
                Some(id) => Some(user_in(txn, row.organisation_id, id).await?),
                None => None,
            };
            let contact_now = contact_of(txn, &row).await?;
            check_people(kind, &usages, row.email.as_deref(), holder_now.as_ref(), &contact_now)?;
            let now_as_read = |read: &user::Model, now: &user::Model| read.version == now.version;
            if !holder.iter().zip(&holder_now).all(|(read, now)| now_as_read(read, now))
                || !now_as_read(&contact, &contact_now)
            {
                return Err(DomainError::Aborted {
                    reason: Reason::ChangedMeanwhile,
                    message: "the certificate's holder or contact person was changed while it was signed; try again"
                        .into(),
                });
            }
            let serial_taken = certificate::Entity::find()
                .filter(certificate::Column::Serial.eq(issued.serial.clone()))
                .count(txn)
                .await?
                > 0;
            if !serial_taken {
                // A parallel pickup with the same token got there first.
                return Err(DomainError::precondition(
                    Reason::CertificatePickupUsed,
                    "this pickup token was already used; the certificate is issued",
                ));
            }
            if tries == 4 {
                return Err(DomainError::Internal("no unused serial number in four tries".into()));
            }
        };
        let serial_hex = issued.serial.as_deref().unwrap_or_default();
        let mut changes = Vec::new();
        diff(&mut changes, "state", &row.state, CertificateState::Issued.as_str());
        diff(&mut changes, "serial", "", serial_hex);
        diff(&mut changes, "subject", "", &subject_text);
        diff(&mut changes, "key_algorithm", "", csr.key.describe());
        diff(
            &mut changes,
            "not_after",
            "",
            crate::services::users::opt_time(Some(not_after)),
        );
        history::record(txn, event(&row, Activity::CertificateIssued, caller, now, changes)).await?;

        if let Some(old_id) = row.renews_id {
            supersede_renewed(txn, caller, old_id, &mut issued, now).await?;
        }
        Ok((issued, row.renews_id.is_some()))
    }

    /// R-CERT-4: a new certificate for the same holder, usages and contact
    /// over a new key, before the old one expires; the old one becomes
    /// SUPERSEDED in the same transaction.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn renew_certificate(&self, caller: &Caller, id: Uuid, csr_pem: &str) -> DomainResult<IssuedCertificate> {
        let ca = self.ca()?;
        let csr = read_csr(csr_pem)?;
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let old = self.visible_certificate(&txn, caller, id).await?;
        ensure_renewer(&txn, caller, &old).await?;
        let state: CertificateState = parse(&old.state)?;
        if state != CertificateState::Issued || old.not_after.is_none_or(|at| at <= now) {
            return Err(DomainError::precondition(
                Reason::CertificateNotRenewable,
                format!(
                    "only an ISSUED certificate that has not expired can be renewed; this one is {}; order a new one",
                    state.as_str()
                ),
            ));
        }
        // The same holder, contact, label, usages and e-mail; no pickup
        // token (the CSR comes with the call).
        let renewal = certificate::Model {
            id: Uuid::now_v7(),
            organisation_id: old.organisation_id,
            kind: old.kind.clone(),
            state: CertificateState::Ordered.as_str().into(),
            holder_id: old.holder_id,
            contact_id: old.contact_id,
            label: old.label.clone(),
            usages: old.usages.clone(),
            email: old.email.clone(),
            renews_id: Some(old.id),
            version: 1,
            created_at: now,
            updated_at: now,
            ..Default::default()
        };
        insert(&txn, &renewal).await?;
        let mut changes = Vec::new();
        diff(&mut changes, "renews_id", "", old.id.to_string());
        history::record(
            &txn,
            event(&renewal, Activity::CertificateOrdered, caller, now, changes),
        )
        .await?;
        let order = order_to_sign(&txn, certificate::Column::Id.eq(renewal.id))
            .await?
            .ok_or_else(|| DomainError::not_found("certificate", renewal.id))?;
        let (issued, _) = self.issue_in(&txn, ca, caller, order, &csr, now).await?;
        txn.commit().await?;
        crate::metrics::certificate_issued(&issued.kind);
        self.publish_crl_after_commit().await;
        Ok(IssuedCertificate {
            certificate_pem: crate::ca::pem("CERTIFICATE", issued.der.as_deref().unwrap_or_default()),
            chain_pem: ca.chain_pem().to_owned(),
            certificate: to_certificate(issued)?,
        })
    }

    /// An order may be deleted until it is picked up (seed 001).
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn delete_certificate_order(&self, caller: &Caller, id: Uuid) -> DomainResult<()> {
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = self.visible_certificate(&txn, caller, id).await?;
        authorize(
            caller,
            manage_action(parse(&row.kind)?),
            Target::organisation(row.organisation_id),
        )?;
        if row.state != CertificateState::Ordered.as_str() {
            return Err(DomainError::precondition(
                Reason::CertificateNotOrdered,
                format!(
                    "only an order not yet picked up can be deleted; this certificate is {}; revoke it instead",
                    row.state
                ),
            ));
        }
        if !delete_order_in(&txn, caller, &row, now, None).await? {
            return Err(DomainError::precondition(
                Reason::CertificateNotOrdered,
                "the order changed meanwhile (picked up, or given a new contact person); look at it again",
            ));
        }
        txn.commit().await?;
        Ok(())
    }

    /// R-CERT-4: REVOKED is final. The contact person (and the holder) are
    /// told; the CRL is re-signed at once.
    #[instrument(level = "debug", skip_all, err(level = "debug"))]
    pub async fn revoke_certificate(
        &self,
        caller: &Caller,
        id: Uuid,
        reason: RevocationReason,
        etag: &str,
    ) -> DomainResult<Certificate> {
        self.ca()?;
        if reason == RevocationReason::Superseded {
            return Err(DomainError::invalid(
                "reason",
                "SUPERSEDED is set by a renewal, not chosen; pick one of the revocation reasons",
            ));
        }
        let now = now_millis();
        let txn = crate::persistence::begin_write(&self.db).await?;
        let row = self.visible_certificate(&txn, caller, id).await?;
        let kind: CertificateKind = parse(&row.kind)?;
        // A holder who lost their key revokes their own user certificate.
        let own = row.holder_id.is_some() && caller.user_id() == row.holder_id;
        if !own {
            authorize(caller, manage_action(kind), Target::organisation(row.organisation_id))?;
        }
        crate::services::organisations::check_etag("certificate", etag, row.version)?;
        match parse::<CertificateState>(&row.state)? {
            CertificateState::Issued => {}
            CertificateState::Ordered => {
                return Err(DomainError::precondition(
                    Reason::CertificateNotIssued,
                    "the certificate is only ordered; delete the order instead",
                ));
            }
            CertificateState::Expired => {
                return Err(DomainError::precondition(
                    Reason::CertificateNotIssued,
                    "the certificate has expired; it needs no revocation",
                ));
            }
            CertificateState::Revoked | CertificateState::Superseded => {
                return Err(DomainError::precondition(
                    Reason::CertificateRevoked,
                    "the certificate is already revoked, and a revocation is final: order a new certificate",
                ));
            }
        }
        let written = ending(&row, CertificateState::Revoked, reason, now)
            .filter(certificate::Column::Version.eq(row.version))
            .exec(&txn)
            .await?;
        if written.rows_affected != 1 {
            return Err(DomainError::stale_etag("certificate"));
        }
        let mut changes = Vec::new();
        diff(&mut changes, "state", &row.state, CertificateState::Revoked.as_str());
        diff(&mut changes, "revocation_reason", "", reason.as_str());
        history::record(&txn, event(&row, Activity::CertificateRevoked, caller, now, changes)).await?;
        if kind == CertificateKind::Organisation {
            self.end_signing_without_sealing_in(&txn, caller, row.organisation_id, now)
                .await?;
        }
        self.tell_revoked(&txn, &row, reason).await?;
        txn.commit().await?;
        self.publish_crl_after_commit().await;
        let row = certificate::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| DomainError::not_found("certificate", id))?;
        to_certificate(row)
    }

    /// The user certificates `person_id` looks after but does not hold,
    /// handed to their holders when the person is deleted, in the
    /// deletion's transaction, each in history. A user certificate's
    /// contact person is its holder by default, and the holder picks it up
    /// and renews it: before, the deleted contact failed both NOT_FOUND for
    /// ever. Organisation and system certificates keep the contact who
    /// left until an administrator names another
    /// (`change_certificate_contact`); their pickup and renewal say so.
    ///
    /// A renewal copies the contact person into a new row, checking them
    /// without a lock (`write_issued`), and this read does not see that row
    /// before the renewal commits. Where the renewal superseded the
    /// certificate first, this write on it waits for that commit, and a
    /// read made after it finds the new certificate: so the read is made
    /// again until it finds nothing new to hand over. Read once, such a
    /// renewal kept the deleted person as its contact. (A renewal that
    /// supersedes second takes the holder on itself: `supersede_renewed`.)
    pub(crate) async fn hand_over_contact_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        person_id: Uuid,
        now: Millis,
    ) -> DomainResult<()> {
        use sea_orm::sea_query::ExprTrait;
        let live = || {
            certificate::Column::State.is_in([CertificateState::Issued.as_str(), CertificateState::Ordered.as_str()])
        };
        let mut looked_at = std::collections::HashSet::new();
        loop {
            let mut rows = certificate::Entity::find()
                .filter(certificate::Column::ContactId.eq(person_id))
                .filter(certificate::Column::Kind.eq(CertificateKind::Employee.as_str()))
                .filter(certificate::Column::HolderId.ne(person_id))
                .filter(live())
                .all(txn)
                .await?;
            rows.retain(|row| looked_at.insert(row.id));
            if rows.is_empty() {
                return Ok(());
            }
            for row in rows {
                let Some(holder_id) = row.holder_id else {
                    continue;
                };
                // Whatever else changed meanwhile (a pickup), the contact
                // is still the person leaving: one version on from what it
                // is. One that ended meanwhile (superseded by the renewal
                // this waited for) is left as it ended, as if this had
                // come after.
                let written = certificate::Entity::update_many()
                    .col_expr(certificate::Column::ContactId, Expr::value(holder_id))
                    .col_expr(
                        certificate::Column::Version,
                        Expr::col(certificate::Column::Version).add(1),
                    )
                    .col_expr(certificate::Column::UpdatedAt, Expr::value(now))
                    .filter(certificate::Column::Id.eq(row.id))
                    .filter(certificate::Column::ContactId.eq(person_id))
                    .filter(live())
                    .exec(txn)
                    .await?;
                if written.rows_affected != 1 {
                    continue;
                }
                let mut changes = Vec::new();
                diff(&mut changes, "contact_id", person_id.to_string(), holder_id.to_string());
                history::record(
                    txn,
                    event(&row, Activity::CertificateContactChanged, caller, now, changes),
                )
                .await?;
            }
        }
    }

    /// A holder's certificates that end with a change of the holder, in
    /// that change's own transaction (`ending` says which and why): ISSUED
    /// ones are REVOKED, orders not picked up are deleted. Each in history.
    /// Returns how many were revoked (the caller publishes a CRL after its
    /// commit, or leaves it to the worker).
    pub(crate) async fn end_holder_certificates_in(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        holder_id: Uuid,
        why: HolderEnding,
        now: Millis,
    ) -> DomainResult<u64> {
        let mut rows = certificate::Entity::find()
            .filter(certificate::Column::HolderId.eq(holder_id))
            .filter(
                certificate::Column::State
                    .is_in([CertificateState::Issued.as_str(), CertificateState::Ordered.as_str()]),
            )
            .all(txn)
            .await?;
        if why == HolderEnding::SigningRightWithdrawn {
            rows.retain(signs);
        }
        let mut revoked = 0;
        for read in rows {
            // Each write holds only if the row is still as read. One changed
            // meanwhile is read again: still live (an order issued after
            // all), it is ended as it now is; ended by the other call
            // (revoked by its holder, its order deleted), it is left as that
            // call made it, not overwritten.
            let mut row = read;
            for _ in 0..3 {
                match self.end_holder_certificate(txn, caller, &row, why, now).await? {
                    Some(was_issued) => {
                        revoked += u64::from(was_issued);
                        break;
                    }
                    None => match certificate::Entity::find_by_id(row.id).one(txn).await? {
                        Some(fresh)
                            if fresh.state == CertificateState::Issued.as_str()
                                || fresh.state == CertificateState::Ordered.as_str() =>
                        {
                            row = fresh
                        }
                        _ => break,
                    },
                }
            }
        }
        Ok(revoked)
    }

    /// Ends one certificate of a holder (`ending`), if it is still as `row`
    /// says: an order is deleted, an issued certificate revoked.
    /// `Some(true)` revoked, `Some(false)` order deleted, `None` the row
    /// changed meanwhile and nothing was written.
    async fn end_holder_certificate(
        &self,
        txn: &DatabaseTransaction,
        caller: &Caller,
        row: &certificate::Model,
        why: HolderEnding,
        now: Millis,
    ) -> DomainResult<Option<bool>> {
        let reason = why.reason();
        let unchanged = || {
            sea_orm::Condition::all()
                .add(certificate::Column::Id.eq(row.id))
                .add(certificate::Column::State.eq(row.state.as_str()))
                .add(certificate::Column::Version.eq(row.version))
        };
        let mut changes = Vec::new();
        if row.state == CertificateState::Ordered.as_str() {
            return Ok(delete_order_in(txn, caller, row, now, None).await?.then_some(false));
        }
        let ended = ending(row, CertificateState::Revoked, reason, now)
            .filter(unchanged())
            .exec(txn)
            .await?;
        if ended.rows_affected != 1 {
            return Ok(None);
        }
        diff(&mut changes, "state", &row.state, CertificateState::Revoked.as_str());
        diff(&mut changes, "revocation_reason", "", reason.as_str());
        history::record(txn, event(row, Activity::CertificateRevoked, caller, now, changes)).await?;
        // The contact person learns why a certificate they look after
        // stopped working (R-CERT-3), also when its holder left; a holder
        // who left is told nothing (`tell_revoked` skips a deleted person).
        self.tell_revoked(txn, row, reason).await?;
        Ok(Some(true))
    }

    /// Tells a revoked certificate's contact person and holder (once each,
    /// if not deleted), in the revocation's transaction (R-CERT-3). A
    /// holder who left (HOLDER_LEFT) and is no longer standing is not told:
    /// a leaver the policy only deactivates was mailed "your certificate
    /// was revoked" at a work address they no longer read, where a deleted
    /// leaver was not (also when they were their own contact person); any
    /// other contact person is told.
    async fn tell_revoked(
        &self,
        txn: &DatabaseTransaction,
        row: &certificate::Model,
        reason: RevocationReason,
    ) -> DomainResult<()> {
        let org = read_organisation(txn, row.organisation_id).await?;
        let what = describe(row);
        let mut told = Vec::new();
        for person in [Some(row.contact_id), row.holder_id].into_iter().flatten() {
            if told.contains(&person) {
                continue;
            }
            told.push(person);
            let Some(recipient) = user::Entity::find_by_id(person).one(txn).await? else {
                continue;
            };
            let left = reason == RevocationReason::HolderLeft
                && row.holder_id == Some(person)
                && recipient.state == UserState::Deactivated.as_str();
            if recipient.state == UserState::Deleted.as_str() || left {
                continue;
            }
            self.notify(
                txn,
                &recipient,
                NotificationKind::Certificate,
                MailKind::CertificateRevoked,
                &[
                    ("first_name", recipient.first_name.as_str()),
                    ("organisation_name", org.name.as_str()),
                    ("certificate", what.as_str()),
                    ("serial", row.serial.as_deref().unwrap_or_default()),
                    ("reason", reason.as_str()),
                ],
                Some(row.id),
            )
            .await?;
        }
        Ok(())
    }

    /// A certificate row as far as the caller can see it: members see their
    /// own organisation's, operators none (R-ACC-6 keeps them to
    /// administrators); outside that view it reads as missing.
    pub(crate) async fn visible_certificate(
        &self,
        db: &impl ConnectionTrait,
        caller: &Caller,
        id: Uuid,
    ) -> DomainResult<certificate::Model> {
        let row = certificate::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| DomainError::not_found("certificate", id))?;
        let visible = match &caller.principal {
            Principal::System { .. } => true,
            Principal::Operator { .. } => false,
            Principal::Member { organisation_id, .. } => *organisation_id == row.organisation_id,
        };
        if !visible {
            return Err(DomainError::not_found("certificate", id));
        }
        Ok(row)
    }
}

/// SHA-256 (hex) of a DER SubjectPublicKeyInfo: how certificates of one
/// key are found.
fn public_key_hash(public_key_der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(public_key_der))
}

/// `public_key_hash` of the key a DER certificate certifies.
fn key_hash_of_der(der: &[u8]) -> Option<String> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| public_key_hash(c.tbs_certificate.subject_pki.raw))
}

/// The key of a CSR may be certified for `order`: no certificate over it
/// was revoked because the key was compromised (an attacker holds it; it
/// came back certified when the holder picked up a new order with the same
/// CSR), and a renewal is over a new key (R-CERT-4), not the key of the
/// certificate it renews.
async fn ensure_key_may_be_certified(
    txn: &DatabaseTransaction,
    order: &certificate::Model,
    key_hash: &str,
) -> DomainResult<()> {
    let compromised = certificate::Entity::find()
        .filter(certificate::Column::PublicKeyHash.eq(key_hash))
        .filter(certificate::Column::RevocationReason.eq(RevocationReason::KeyCompromised.as_str()))
        .count(txn)
        .await?
        > 0;
    // And those revoked without their key's hash (by a pod of the release
    // before, during an upgrade): few, found by a partial index, and their
    // DER has the key.
    let compromised = compromised || {
        let unhashed: Vec<Option<Vec<u8>>> = certificate::Entity::find()
            .select_only()
            .column(certificate::Column::Der)
            .filter(certificate::Column::PublicKeyHash.is_null())
            .filter(certificate::Column::RevocationReason.eq(RevocationReason::KeyCompromised.as_str()))
            .into_tuple()
            .all(txn)
            .await?;
        unhashed
            .iter()
            .flatten()
            .any(|der| key_hash_of_der(der).as_deref() == Some(key_hash))
    };
    if compromised {
        return Err(DomainError::precondition(
            Reason::CertificateKeyCompromised,
            "a certificate over this key was revoked because the key was compromised; make a new key and a CSR for it",
        ));
    }
    if let Some(renewed) = order.renews_id {
        let old = certificate::Entity::find_by_id(renewed)
            .one(txn)
            .await?
            .ok_or_else(|| DomainError::not_found("certificate", renewed))?;
        // Certificates issued before keys were hashed: the key from the DER.
        let old_key = match &old.public_key_hash {
            Some(hash) => Some(hash.clone()),
            None => old.der.as_deref().and_then(key_hash_of_der),
        };
        if old_key.as_deref() == Some(key_hash) {
            return Err(DomainError::precondition(
                Reason::CertificateKeyNotNew,
                "a renewal is over a new key: make a new key and a CSR for it",
            ));
        }
    }
    Ok(())
}

async fn insert(db: &impl ConnectionTrait, row: &certificate::Model) -> DomainResult<()> {
    // Every column of the row, as it is.
    let active = row.clone().into_active_model().reset_all();
    certificate::Entity::insert(active).exec_without_returning(db).await?;
    Ok(())
}

/// How mails and notifications name a certificate.
pub(crate) fn describe(row: &certificate::Model) -> String {
    match (&row.label, &row.serial) {
        (Some(label), _) => format!("{} ({})", label, row.kind.to_lowercase()),
        (None, Some(serial)) => format!("user certificate {serial}"),
        (None, None) => "user certificate".into(),
    }
}

/// The id of the certificate a line of renewals began with: `row`'s own
/// unless it renews another. An organisation or system certificate keeps
/// that identity for good, however often it is renewed.
async fn first_of_renewals(db: &impl ConnectionTrait, row: &certificate::Model) -> DomainResult<Uuid> {
    let (mut first, mut renews) = (row.id, row.renews_id);
    // Each renewal is a newer row than what it renews, so the walk ends;
    // the bound guards against a cycle a hand-edited database could hold.
    for _ in 0..10_000 {
        let Some(earlier) = renews else {
            return Ok(first);
        };
        first = earlier;
        renews = certificate::Entity::find_by_id(earlier)
            .select_only()
            .column(certificate::Column::RenewsId)
            .into_tuple::<Option<Uuid>>()
            .one(db)
            .await?
            .flatten();
    }
    Err(DomainError::Internal(format!(
        "the renewals before certificate {} do not end",
        row.id
    )))
}

/// X.520's upper bounds (ub-common-name, ub-organization-name), in
/// characters: a longer value makes a certificate other tools refuse to
/// re-encode (OpenSSL's "string too long") and linters flag. Names and
/// organisation names may be longer (up to 201 and 200 characters), and a
/// label grows under NFC; the given name and surname keep theirs whole.
const UB_COMMON_NAME: usize = 64;
const UB_ORGANIZATION_NAME: usize = 64;

/// `text` cut to at most `bound` characters, without trailing spaces.
fn within_upper_bound(text: &str, bound: usize) -> String {
    match text.char_indices().nth(bound) {
        Some((end, _)) => text[..end].trim_end().to_owned(),
        None => text.to_owned(),
    }
}

/// The subject in the shape of the Danish OCES3 certificates, from our
/// records only. Never a CPR number; a user created anonymous (R-USR-10)
/// is named by a stable pseudonym instead of their name.
fn subject_of(
    org: &organisation::Model,
    kind: CertificateKind,
    holder: Option<&user::Model>,
    row: &certificate::Model,
    identity: Uuid,
) -> Vec<(SubjectAttribute, String)> {
    let mut subject = vec![
        (SubjectAttribute::Country, "DK".to_owned()),
        (SubjectAttribute::OrganizationIdentifier, format!("NTRDK-{}", org.cvr)),
        (
            SubjectAttribute::Organization,
            within_upper_bound(&org.name, UB_ORGANIZATION_NAME),
        ),
    ];
    match (kind, holder) {
        (CertificateKind::Employee, Some(holder)) => {
            subject.push((SubjectAttribute::SerialNumber, format!("UI:DK-E:G:{}", holder.id)));
            if holder.anonymous {
                let pseudonym = format!("Pseudonym {}", &hex::encode(sha2_of(holder.id))[..12]);
                subject.push((SubjectAttribute::Pseudonym, pseudonym.clone()));
                subject.push((SubjectAttribute::CommonName, pseudonym));
            } else {
                subject.push((SubjectAttribute::GivenName, holder.first_name.clone()));
                subject.push((SubjectAttribute::Surname, holder.surname.clone()));
                subject.push((
                    SubjectAttribute::CommonName,
                    within_upper_bound(&format!("{} {}", holder.first_name, holder.surname), UB_COMMON_NAME),
                ));
            }
        }
        _ => {
            // A renewal keeps the identity of the line of renewals.
            subject.push((SubjectAttribute::SerialNumber, format!("UI:DK-O:G:{identity}")));
            subject.push((
                SubjectAttribute::CommonName,
                within_upper_bound(row.label.as_deref().unwrap_or_default(), UB_COMMON_NAME),
            ));
        }
    }
    subject
}

/// The subject as one line, `C=DK, O=..., CN=...`, in the certificate's
/// order, each value written by `value`.
fn subject_line(subject: &[(SubjectAttribute, String)], value: impl Fn(&str) -> String) -> String {
    subject
        .iter()
        .map(|(attribute, text)| format!("{}={}", attribute.short_name(), value(text)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An attribute value escaped as RFC 4514 (section 2.4) asks, so that the
/// subject line reads back as the names it holds: a name with a comma
/// ("Hansen, Karen" or "Firma, A/S") is one value, and a name like
/// "Karen, CN=Root" cannot pass for a second common name.
fn escape_rfc4514(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut escaped = String::with_capacity(value.len());
    for (index, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '#' if index == 0 => escaped.push_str("\\#"),
            ' ' if index == 0 || index == last => escaped.push_str("\\ "),
            '\0' => escaped.push_str("\\00"),
            _ => escaped.push(c),
        }
    }
    escaped
}

fn sha2_of(id: Uuid) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(id.as_bytes()).into()
}

/// Whether a certificate with these usages signs for its holder: it has
/// the non-repudiation bit, or it is an e-mail certificate (emailProtection)
/// with the digital-signature bit, which S/MIME clients take as a signing
/// certificate (`openssl verify -purpose smimesign` accepts it). The second
/// is AUTHENTICATION merged with EMAIL_ENCRYPTION: without this, a person
/// without the signing right got a certificate that signs mail.
fn can_sign(usages: &[CertificateUsage]) -> bool {
    let (ku, eku) = key_usages(usages, false);
    ku.contains(&KeyUsagePurpose::ContentCommitment)
        || (ku.contains(&KeyUsagePurpose::DigitalSignature) && eku.contains(&ExtendedKeyUsagePurpose::EmailProtection))
}

/// KeyUsage and ExtendedKeyUsage per usage (R-CERT-3). Encryption is key
/// encipherment for RSA keys and key agreement for elliptic-curve keys.
fn key_usages(usages: &[CertificateUsage], rsa: bool) -> (Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>) {
    let mut ku = Vec::new();
    let mut eku = Vec::new();
    let mut add = |k: KeyUsagePurpose, e: Option<ExtendedKeyUsagePurpose>| {
        if !ku.contains(&k) {
            ku.push(k);
        }
        if let Some(e) = e
            && !eku.contains(&e)
        {
            eku.push(e);
        }
    };
    let encipher = if rsa {
        KeyUsagePurpose::KeyEncipherment
    } else {
        KeyUsagePurpose::KeyAgreement
    };
    for usage in usages {
        match usage {
            CertificateUsage::Authentication | CertificateUsage::ServiceAccess => {
                add(
                    KeyUsagePurpose::DigitalSignature,
                    Some(ExtendedKeyUsagePurpose::ClientAuth),
                );
            }
            CertificateUsage::Signing | CertificateUsage::Sealing => {
                add(KeyUsagePurpose::DigitalSignature, None);
                add(KeyUsagePurpose::ContentCommitment, None);
            }
            CertificateUsage::EmailEncryption => {
                add(encipher, Some(ExtendedKeyUsagePurpose::EmailProtection));
            }
            CertificateUsage::Encryption => add(encipher, None),
        }
    }
    (ku, eku)
}
