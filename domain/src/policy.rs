//! Who may do what (R-ACC-1, R-ACC-6, R-ACC-8): one table, consulted by every
//! domain entry point before it changes anything.

use std::sync::Arc;

use uuid::Uuid;

use crate::error::DomainError;
use crate::model::Role;

/// Who is calling, as the bearer token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform provider (R-ORG-2), above organisations.
    Operator { token_id: Uuid },
    /// A user of one organisation, with the roles and admin levels they
    /// hold there.
    Member {
        user_id: Uuid,
        organisation_id: Uuid,
        roles: Vec<Role>,
        levels: Vec<HeldLevel>,
    },
    /// The worker acting on a schedule.
    System { task: &'static str },
}

/// The strongest admin level (R-ACC-2): edits users, grants levels 1-4.
pub const LEVEL_1: u8 = 1;
/// Edits users, grants levels 3-4.
pub const LEVEL_2: u8 = 2;
/// Edits users, grants nothing.
pub const LEVEL_3: u8 = 3;
/// Only views users.
pub const LEVEL_4: u8 = 4;

/// An admin level a member holds (R-ACC-2), with what it covers: the whole
/// organisation, or a unit and its subtree, resolved to unit ids when the
/// caller was authenticated (`services::access::held_levels`, the one place
/// scopes are resolved), so every check below is pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLevel {
    pub level: u8,
    /// None: the whole organisation. Some: the unit it is held on (first)
    /// and every unit below it.
    pub units: Option<Arc<[Uuid]>>,
}

impl HeldLevel {
    /// Whether a user placed in `unit` (none: in no unit) is in scope. A
    /// user in no unit is in the organisation's scope only.
    pub fn covers(&self, unit: Option<Uuid>) -> bool {
        match &self.units {
            None => true,
            Some(units) => unit.is_some_and(|unit| units.contains(&unit)),
        }
    }

    /// The unit it is held on; none for the whole organisation.
    pub fn unit_id(&self) -> Option<Uuid> {
        self.units.as_ref().and_then(|units| units.first().copied())
    }
}

/// The weakest level a level grants (R-ACC-2): level 1 grants 1-4, level 2
/// grants 3-4, levels 3 and 4 grant nothing.
pub fn strongest_grantable(level: u8) -> Option<u8> {
    match level {
        LEVEL_1 => Some(LEVEL_1),
        LEVEL_2 => Some(LEVEL_3),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// Set when the caller acts for another person (R-AUTH-3, R-ACC-5).
    pub on_behalf_of: Option<Uuid>,
    /// Set when a member acts as another through shared access (R-ACC-5):
    /// the principal is then the owner, holding no roles or levels (being
    /// shared with confers no administration), and this is who acts.
    pub acting: Option<Acting>,
    /// The person behind a member caller, as they are now: history keeps
    /// their name and e-mail as they were when they acted.
    pub identity: Option<Identity>,
    /// The session or API token a member's call came with: a write that
    /// must not outlive that credential (a token made with a session a
    /// password reset is ending) checks it again under a lock.
    pub credential: Option<Uuid>,
}

/// The person behind a call made as another user through shared access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acting {
    pub by: Uuid,
    /// The share allows edits, not only reads.
    pub may_edit: bool,
}

/// A person's name and e-mail address, for history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub display_name: String,
    pub email: String,
}

impl Caller {
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            on_behalf_of: None,
            acting: None,
            identity: None,
            credential: None,
        }
    }

    /// `by` acting as `owner` through a share of the owner's resources: the
    /// owner's own resources, none of the owner's roles or levels, and
    /// history names `by` as the actor on behalf of the owner.
    pub fn acting_as(owner: Uuid, organisation_id: Uuid, acting: Acting) -> Self {
        Self {
            principal: Principal::Member {
                user_id: owner,
                organisation_id,
                roles: Vec::new(),
                levels: Vec::new(),
            },
            on_behalf_of: Some(owner),
            acting: Some(acting),
            identity: None,
            credential: None,
        }
    }

    pub fn with_credential(mut self, token_id: Uuid) -> Self {
        self.credential = Some(token_id);
        self
    }

    pub fn with_identity(mut self, display_name: String, email: String) -> Self {
        self.identity = Some(Identity { display_name, email });
        self
    }

    /// How history names the caller to people: the person's name, or what
    /// kind of caller it was.
    pub fn display_name(&self) -> String {
        match (&self.identity, &self.principal) {
            (Some(identity), _) => identity.display_name.clone(),
            (None, Principal::Operator { .. }) => "operator".into(),
            (None, Principal::System { task }) => format!("system ({task})"),
            (None, Principal::Member { .. }) => String::new(),
        }
    }

    pub fn system(task: &'static str) -> Self {
        Self::new(Principal::System { task })
    }

    /// How history names this caller.
    pub fn actor(&self) -> String {
        match &self.principal {
            Principal::Operator { token_id } => format!("operator:{token_id}"),
            Principal::Member { user_id, .. } => format!("user:{}", self.acting.map_or(*user_id, |acting| acting.by)),
            Principal::System { task } => format!("system:{task}"),
        }
    }

    /// The member who is really calling: the one acting, when acting as
    /// another through shared access.
    pub fn acting_user_id(&self) -> Option<Uuid> {
        self.acting.map(|acting| acting.by).or_else(|| self.user_id())
    }

    pub fn on_behalf_of(&self) -> Option<String> {
        self.on_behalf_of.map(|id| format!("user:{id}"))
    }

    /// Whether the caller holds admin levels, whose checks need to know
    /// whether a target user holds one too.
    pub fn holds_levels(&self) -> bool {
        matches!(&self.principal, Principal::Member { levels, .. } if !levels.is_empty())
    }

    pub fn is_operator(&self) -> bool {
        matches!(self.principal, Principal::Operator { .. })
    }

    pub fn user_id(&self) -> Option<Uuid> {
        match &self.principal {
            Principal::Member { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }

    pub fn organisation_id(&self) -> Option<Uuid> {
        match &self.principal {
            Principal::Member { organisation_id, .. } => Some(*organisation_id),
            _ => None,
        }
    }
}

/// Declares `Action` and `Action::ALL` from one list, so the list of actions
/// cannot drift from the enum.
macro_rules! actions {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every action, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
        }
    };
}

actions! {
/// Every guarded action of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateOrganisation,
    ReadOrganisation,
    UpdateOrganisation,
    ReadSettings,
    UpdateSettings,
    SetLicenceCount,
    ReadUnits,
    ManageUnits,
    CreateUser,
    ReadUser,
    ListUsers,
    UpdateUser,
    ChangeRoles,
    DeactivateUser,
    ReactivateUser,
    DeleteUser,
    ReadUserHistory,
    CreateApiToken,
    ManageApiTokens,
    ManageActivation,
    DecideAnonymityRequests,
    ManageMailQueue,
    /// Bulk work on users from files, and bulk activation (R-BULK).
    ImportUsers,
    /// Legacy imports bring administrators and skip activation (R-BULK-5).
    ImportLegacyUsers,
    ReadImports,
    /// Order, delete orders of and revoke user certificates (R-CERT-2).
    ManageUserCertificates,
    /// The same for organisation and system certificates (R-CERT-3).
    ManageOrganisationCertificates,
    /// Search, read and export an organisation's certificates (R-CERT-6).
    ReadCertificates,
    /// The CA's certificate and CRL are public; any caller may read them.
    ReadCertificateAuthority,
    /// Lift a login lock (R-AUTH-2).
    UnlockLogin,
    /// Mail a user a link to choose a new password (R-AUTH-2).
    SendPasswordReset,
    /// Remove a user's authenticator app, e.g. after a lost phone (R-AUTH-3).
    RemoveAuthenticator,
    /// List and end a user's sessions (R-AUTH-3); everyone may their own.
    ManageSessions,
    /// Grant and revoke admin levels (R-ACC-2); levels 1 and 2 within their
    /// ceiling and scope, checked by [`authorize_level_grant`].
    GrantAdminLevels,
    /// See who holds which admin level.
    ReadAdminLevels,
    /// Give and revoke rights (R-ACC-3) as an administrator; holders of a
    /// grant with grant options pass it on, checked by [`authorize_grant`].
    ManageGrants,
    /// See the organisation's grants; everyone sees their own.
    ReadGrants,
    /// Share a user's own resources with a colleague (R-ACC-5): the owner
    /// theirs, administrators a user's they may edit.
    ShareAccess,
    /// See the organisation's shares; everyone sees those they are in.
    ReadShares,
    /// Create and delete custom groups (R-ACC-7).
    ManageGroups,
    /// Add and remove members of existing custom groups (R-ACC-7).
    ManageGroupMembers,
    /// See the organisation's groups and their members; everyone sees the
    /// groups they are in.
    ReadGroups,
    /// See the organisation's requests to join (R-ORG-3).
    ReadJoinRequests,
    /// Approve (create the user) or reject a request to join.
    DecideJoinRequests,
}
}

/// What an operator may do on an organisation's users: administrators only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperatorScope {
    No,
    Yes,
    AdministratorsOnly,
}

use Action::*;
use OperatorScope::{AdministratorsOnly, No, Yes};
use Role::{OrganisationAdmin as OA, RightsAdmin as RA, User as U, UserAdmin as UA};

/// No admin level allows the action.
const NO_LEVEL: u8 = 0;

/// The policy table: per action, whether operators may act, which roles of
/// the target organisation may, the weakest admin level that may within its
/// scope (R-ACC-2: levels 1-3 edit users, level 4 views them; `NO_LEVEL`:
/// none), and whether a member may act on their own user record.
const POLICY: &[(Action, OperatorScope, &[Role], u8, bool)] = &[
    (CreateOrganisation, Yes, &[], NO_LEVEL, false),
    (ReadOrganisation, Yes, &[OA, UA, RA, U], NO_LEVEL, false),
    (UpdateOrganisation, Yes, &[OA], NO_LEVEL, false),
    (ReadSettings, Yes, &[OA, UA], NO_LEVEL, false),
    (UpdateSettings, No, &[OA], NO_LEVEL, false),
    (SetLicenceCount, Yes, &[], NO_LEVEL, false),
    (ReadUnits, Yes, &[OA, UA, RA, U], NO_LEVEL, false),
    (ManageUnits, No, &[OA], NO_LEVEL, false),
    (CreateUser, AdministratorsOnly, &[UA], LEVEL_3, false),
    (ReadUser, AdministratorsOnly, &[OA, UA, RA], LEVEL_4, true),
    (ListUsers, AdministratorsOnly, &[OA, UA, RA], LEVEL_4, false),
    (UpdateUser, No, &[UA], LEVEL_3, false),
    (ChangeRoles, No, &[OA], NO_LEVEL, false),
    (DeactivateUser, AdministratorsOnly, &[UA], LEVEL_3, false),
    (ReactivateUser, AdministratorsOnly, &[UA], LEVEL_3, false),
    (DeleteUser, No, &[UA], LEVEL_3, false),
    (ReadUserHistory, AdministratorsOnly, &[OA, UA], LEVEL_4, true),
    // R-AUTH-1: nobody, operator or administrator, obtains a credential that
    // acts as another person: a member makes API tokens for themselves only.
    (CreateApiToken, No, &[], NO_LEVEL, true),
    // Listing and revoking other people's tokens acts as nobody; everyone
    // lists and revokes their own (and, through a share, the owner's).
    (ManageApiTokens, AdministratorsOnly, &[OA], NO_LEVEL, true),
    (ManageActivation, AdministratorsOnly, &[UA], LEVEL_3, false),
    (DecideAnonymityRequests, No, &[UA], NO_LEVEL, false),
    (ManageMailQueue, Yes, &[], NO_LEVEL, false),
    // R-BULK: user administrators import into their own organisation;
    // operators import nothing. Rows that make administrators are checked
    // row by row by CreateUser's own ChangeRoles rule.
    (ImportUsers, No, &[UA], NO_LEVEL, false),
    (ImportLegacyUsers, No, &[OA], NO_LEVEL, false),
    (ReadImports, No, &[OA, UA], NO_LEVEL, false),
    // R-CERT: user administrators look after user certificates, organisation
    // administrators after the organisation's own; operators after none
    // (R-ACC-6). Holders pick up, renew and (for a lost key) revoke their
    // own: the certificate service checks that person itself.
    (ManageUserCertificates, No, &[UA], NO_LEVEL, false),
    (ManageOrganisationCertificates, No, &[OA], NO_LEVEL, false),
    (ReadCertificates, No, &[OA, UA], NO_LEVEL, false),
    (ReadCertificateAuthority, Yes, &[OA, UA, RA, U], NO_LEVEL, false),
    // R-AUTH-2, R-ACC-6: user administrators unlock their users, the
    // operator organisation administrators (seed 001).
    (UnlockLogin, AdministratorsOnly, &[UA], LEVEL_3, false),
    (SendPasswordReset, AdministratorsOnly, &[UA], LEVEL_3, false),
    (RemoveAuthenticator, AdministratorsOnly, &[UA], LEVEL_3, false),
    (ManageSessions, AdministratorsOnly, &[UA], LEVEL_3, true),
    // R-ACC-2: organisation and rights administrators grant any level
    // anywhere; levels 1 and 2 up to their ceiling within their scope.
    (GrantAdminLevels, No, &[OA, RA], LEVEL_2, false),
    (ReadAdminLevels, No, &[OA, UA, RA], LEVEL_2, true),
    // R-ACC-1, R-ACC-3: rights administrators grant and revoke rights (and
    // organisation administrators, who appoint them).
    (ManageGrants, No, &[OA, RA], NO_LEVEL, false),
    (ReadGrants, No, &[OA, UA, RA], NO_LEVEL, true),
    // R-ACC-5: the owner shares their own resources; organisation and user
    // administrators, and levels 1-2 within their scope (seed 003), share a
    // user's, never with themselves (two keys, checked by the service).
    (ShareAccess, No, &[OA, UA], LEVEL_2, true),
    (ReadShares, No, &[OA, UA], NO_LEVEL, false),
    // R-ACC-7 (seed 001): organisation administrators make the groups, user
    // administrators fill the ones that exist; rights administrators, who
    // grant to groups, see them.
    (ManageGroups, No, &[OA], NO_LEVEL, false),
    (ManageGroupMembers, No, &[OA, UA], NO_LEVEL, false),
    (ReadGroups, No, &[OA, UA, RA], NO_LEVEL, false),
    // R-ORG-3: organisation administrators own the setting and see the
    // requests; user administrators, who create users, decide them.
    (ReadJoinRequests, No, &[OA, UA], NO_LEVEL, false),
    (DecideJoinRequests, No, &[UA], NO_LEVEL, false),
];

fn row(action: Action) -> (OperatorScope, &'static [Role], u8, bool) {
    POLICY
        .iter()
        .find(|(a, ..)| *a == action)
        .map(|(_, op, roles, level, own)| (*op, *roles, *level, *own))
        .unwrap_or((No, &[], NO_LEVEL, false))
}

/// Where in the organisation an action lands, for scoped admin levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// An action on the organisation as a whole (a listing): a level held
    /// anywhere allows it, and the listing shows that level's scope only
    /// ([`user_listing_scope`]).
    Anywhere,
    /// An action on (or creating) a user placed in this unit; none: in no
    /// unit.
    InUnit(Option<Uuid>),
}

/// The resource an action touches, as far as the policy needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// `None` for actions above organisations (creating one).
    pub organisation_id: Option<Uuid>,
    /// Set when the action is on one user.
    pub user_id: Option<Uuid>,
    /// Whether that user (or the user being created) holds an admin role.
    pub user_is_administrator: bool,
    /// Whether that user holds an admin level: filled in by the domain only
    /// for callers who hold levels themselves (`Caller::holds_levels`).
    pub user_holds_level: bool,
    /// Whether that user delegates (holds a level, or a grant they may pass
    /// on): filled in by the domain only where how they sign in changes.
    pub user_delegates: bool,
    pub placement: Placement,
}

impl Target {
    pub fn platform() -> Self {
        Self {
            organisation_id: None,
            user_id: None,
            user_is_administrator: false,
            user_holds_level: false,
            user_delegates: false,
            placement: Placement::Anywhere,
        }
    }

    pub fn organisation(id: Uuid) -> Self {
        Self {
            organisation_id: Some(id),
            user_id: None,
            user_is_administrator: false,
            user_holds_level: false,
            user_delegates: false,
            placement: Placement::Anywhere,
        }
    }

    /// A user to be created in `unit_id` (none: in no unit).
    pub fn new_user(organisation_id: Uuid, unit_id: Option<Uuid>) -> Self {
        Self {
            placement: Placement::InUnit(unit_id),
            ..Self::organisation(organisation_id)
        }
    }

    pub fn user(organisation_id: Uuid, user_id: Uuid, is_administrator: bool, unit_id: Option<Uuid>) -> Self {
        Self {
            organisation_id: Some(organisation_id),
            user_id: Some(user_id),
            user_is_administrator: is_administrator,
            user_holds_level: false,
            user_delegates: false,
            placement: Placement::InUnit(unit_id),
        }
    }

    /// The same user, noted as holding an admin level (or not).
    pub fn holding_level(self, holds_level: bool) -> Self {
        Self {
            user_holds_level: holds_level,
            ..self
        }
    }

    /// The same user, noted as delegating (or not): see `user_delegates`.
    pub fn delegating(self, delegates: bool) -> Self {
        Self {
            user_delegates: delegates,
            ..self
        }
    }

    /// The same user, moved to another unit: a scoped level must cover
    /// both where the user is and where they go.
    pub fn moved_to(self, unit_id: Option<Uuid>) -> Self {
        Self {
            placement: Placement::InUnit(unit_id),
            ..self
        }
    }
}

/// Whether the operator's view of an organisation's users is limited to its
/// administrators (R-ACC-6). List queries use it to filter.
pub fn operator_sees_administrators_only(caller: &Caller) -> bool {
    caller.is_operator()
}

/// Whether a user lies within what the caller can see at all: members see
/// their own organisation, operators the organisations' administrators
/// (R-ACC-6). A user outside that view reads as missing (NOT_FOUND), exactly
/// like an id that names no user, so ids cannot be probed; inside it, a
/// refused action is PERMISSION_DENIED.
pub fn sees_user(caller: &Caller, organisation_id: Uuid, user_is_administrator: bool) -> bool {
    match &caller.principal {
        Principal::System { .. } => true,
        Principal::Operator { .. } => user_is_administrator,
        Principal::Member {
            organisation_id: own, ..
        } => *own == organisation_id,
    }
}

/// Whether an organisation's own records (its units, its people's
/// requests) are within the caller's view: members see their own
/// organisation's, the operator and the system every organisation's.
/// Outside it a record reads as missing, like an id that names none.
pub fn sees_organisation(caller: &Caller, organisation_id: Uuid) -> bool {
    match &caller.principal {
        Principal::System { .. } | Principal::Operator { .. } => true,
        Principal::Member {
            organisation_id: own, ..
        } => *own == organisation_id,
    }
}

/// [`authorize`] for an action on one existing user: NOT_FOUND when the user
/// is outside the caller's view (see [`sees_user`]).
pub fn authorize_on_user(caller: &Caller, action: Action, target: Target) -> Result<(), DomainError> {
    if let (Some(organisation_id), Some(user_id)) = (target.organisation_id, target.user_id)
        && !sees_user(caller, organisation_id, target.user_is_administrator)
    {
        return Err(DomainError::not_found("user", user_id));
    }
    authorize(caller, action, target)?;
    if action.changes_sign_in() {
        authorize_sign_in_change(caller, target)?;
    }
    Ok(())
}

/// R-AUTH-1: whoever changes how an administrator signs in (their e-mail
/// address or login id, which password resets and mailed codes go to; the
/// CPR number or birth date an activation proves; their authenticator app;
/// an activation link or code for them) could take over their login, so
/// among members only someone who may change roles does, i.e. someone who
/// could make themselves that administrator's equal anyway. A user
/// administrator could otherwise move an organisation administrator's
/// address to a mailbox of their own, verify it, reset the password and
/// sign in as them. The person themselves and operators (who look after
/// organisation administrators, R-ACC-6) are not limited by this.
pub fn authorize_sign_in_change(caller: &Caller, target: Target) -> Result<(), DomainError> {
    let guarded = target.user_is_administrator || target.user_delegates;
    if !guarded || caller.is_operator() || caller.acting_user_id() == target.user_id {
        return Ok(());
    }
    authorize(caller, ChangeRoles, target).map_err(|_| {
        DomainError::denied(
            "how an administrator, or a user who holds an admin level or may pass rights on, signs in (e-mail, login id, CPR number, birth date, authenticator app, activation, login lock) is changed only by someone who may change roles (an organisation administrator): otherwise it would hand over their login and what they may give",
        )
    })
}

pub fn authorize(caller: &Caller, action: Action, target: Target) -> Result<(), DomainError> {
    let (operator, roles, weakest_level, self_allowed) = row(action);
    let allowed = match &caller.principal {
        Principal::System { .. } => true,
        Principal::Operator { .. } => match operator {
            Yes => true,
            // A per-user action on a non-administrator, or creating one, is
            // outside the operator's view; a listing is filtered instead.
            AdministratorsOnly => target.user_id.is_none() || target.user_is_administrator,
            No => false,
        },
        Principal::Member {
            user_id,
            organisation_id,
            roles: held,
            levels,
        } => {
            let same_org = target.organisation_id == Some(*organisation_id);
            let by_role = held.iter().any(|r| roles.contains(r));
            // A level administers ordinary users: it views administrators
            // and other level holders in its scope, but never acts on them
            // (a level 3 must not reset the password of an organisation
            // administrator placed in its unit, nor of a level 1; a level 2
            // must not share an administrator's resources). Granting levels
            // has its own rule (`authorize_level_grant`).
            let acts_on_an_administrator = matches!(weakest_level, LEVEL_2 | LEVEL_3)
                && action != GrantAdminLevels
                && target.user_id.is_some()
                && (target.user_is_administrator || target.user_holds_level);
            let by_level = !acts_on_an_administrator
                && levels
                    .iter()
                    .any(|l| weakest_level != NO_LEVEL && l.level <= weakest_level && in_scope(l, target.placement));
            let on_self = self_allowed && target.user_id == Some(*user_id);
            same_org && (by_role || by_level || on_self)
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(DomainError::denied(format!("the caller may not {}", describe(action))))
    }
}

fn in_scope(level: &HeldLevel, placement: Placement) -> bool {
    match placement {
        Placement::Anywhere => true,
        Placement::InUnit(unit) => level.covers(unit),
    }
}

/// Which of an organisation's users a listing the caller may make shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingScope {
    /// All (the operator's listing is cut to administrators separately).
    Everyone,
    /// Only users placed in these units: the caller holds levels on units
    /// and no role that sees the whole organisation.
    Units(Vec<Uuid>),
}

/// What of `organisation_id`'s users `action` (a listing, already
/// authorised) shows the caller: a scoped level shows its subtree only.
pub fn user_listing_scope(caller: &Caller, action: Action, organisation_id: Uuid) -> ListingScope {
    let (_, roles, weakest_level, _) = row(action);
    let Principal::Member {
        roles: held, levels, ..
    } = &caller.principal
    else {
        return ListingScope::Everyone;
    };
    let usable: Vec<&HeldLevel> = levels.iter().filter(|l| l.level <= weakest_level).collect();
    if held.iter().any(|r| roles.contains(r)) || usable.iter().any(|l| l.units.is_none()) {
        return ListingScope::Everyone;
    }
    debug_assert!(caller.organisation_id() == Some(organisation_id));
    let mut units: Vec<Uuid> = usable
        .iter()
        .flat_map(|l| l.units.iter().flat_map(|u| u.iter().copied()))
        .collect();
    units.sort();
    units.dedup();
    ListingScope::Units(units)
}

/// A level about to be granted, changed or revoked, and where.
#[derive(Debug, Clone, Copy)]
pub struct LevelChange {
    pub grantee: Uuid,
    /// The level granted (or, revoking, the level taken away).
    pub level: u8,
    /// The unit it is held on; none: the whole organisation.
    pub unit_id: Option<Uuid>,
    /// Where the grantee is placed.
    pub grantee_unit: Option<Uuid>,
}

/// R-ACC-2, R-ACC-4: whether `caller`, holding `granter_levels` now (read in
/// the granting transaction, not from the cached caller), may grant or
/// revoke `change`. Organisation and rights administrators may any level
/// anywhere; a level 1 grants 1-4 and a level 2 grants 3-4, on their own
/// unit's subtree and to people within it. Nobody grants (or widens) a
/// level for themselves, whatever they hold: a colleague must act. Giving up
/// one's own level is always allowed (`revoking_own`).
pub fn authorize_level_grant(
    caller: &Caller,
    granter_levels: &[HeldLevel],
    change: LevelChange,
    revoking_own: bool,
) -> Result<(), DomainError> {
    let Principal::Member { user_id, roles, .. } = &caller.principal else {
        return Err(DomainError::denied("the caller may not grant admin levels"));
    };
    if revoking_own && change.grantee == *user_id {
        return Ok(());
    }
    if change.grantee == *user_id {
        return Err(DomainError::denied(
            "nobody grants themselves an admin level (R-ACC-4: two keys): a colleague must do it",
        ));
    }
    if roles.iter().any(|r| matches!(r, OA | RA)) {
        return Ok(());
    }
    let allowed = granter_levels.iter().any(|held| {
        strongest_grantable(held.level).is_some_and(|strongest| change.level >= strongest)
            && match change.unit_id {
                None => held.units.is_none(),
                Some(unit) => held.covers(Some(unit)),
            }
            && held.covers(change.grantee_unit)
    });
    if allowed {
        Ok(())
    } else {
        Err(DomainError::denied(format!(
            "the caller may not grant or revoke level {} here: level 1 grants levels 1-4 and level 2 levels 3-4, within the unit they hold it on and to people placed there",
            change.level
        )))
    }
}

/// The actions a grant allows, or passes on (R-ACC-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    pub read: bool,
    pub edit: bool,
}

impl Actions {
    pub fn is_empty(self) -> bool {
        !self.read && !self.edit
    }

    /// Whether every action of `self` is among `other`'s.
    pub fn within(self, other: Actions) -> bool {
        (!self.read || other.read) && (!self.edit || other.edit)
    }
}

/// A grant the caller holds now, with the units its scope covers (see
/// [`HeldLevel::units`]).
#[derive(Debug, Clone)]
pub struct HeldGrant {
    pub id: Uuid,
    pub right: String,
    pub units: Option<Arc<[Uuid]>>,
    /// Held on this one resource only; none: on everything in `units`.
    pub resource: Option<String>,
    pub grantable: Actions,
    pub may_authorise: bool,
}

/// A grant about to be made.
#[derive(Debug, Clone, Copy)]
pub struct GrantRequest<'a> {
    /// The grantee user, or a group.
    pub grantee: Uuid,
    /// The grantee is a group the caller is in: granting to it is granting
    /// to oneself.
    pub caller_in_grantee_group: bool,
    pub right: &'a str,
    /// None: the whole organisation.
    pub unit_id: Option<Uuid>,
    /// One resource within that scope; none: all of it.
    pub resource: Option<&'a str>,
    pub actions: Actions,
    pub grantable: Actions,
    pub may_authorise: bool,
}

/// R-ACC-3, R-ACC-4: whether `caller` may make `request`, and on the
/// strength of which of their grants (`held`, read in the granting
/// transaction). `Ok(None)`: an organisation or rights administrator grants
/// anything, on nobody's grant. Otherwise a grant of the same right, whose
/// scope covers the new one, whose grant options include the new actions,
/// and, for the new grant to carry grant options or the authorise flag
/// itself, that may authorise (and then only options it has). Nobody grants
/// to themselves, whatever they hold.
pub fn authorize_grant(
    caller: &Caller,
    held: &[HeldGrant],
    request: GrantRequest<'_>,
) -> Result<Option<Uuid>, DomainError> {
    let Principal::Member { user_id, roles, .. } = &caller.principal else {
        return Err(DomainError::denied("the caller may not grant rights"));
    };
    if request.grantee == *user_id || request.caller_in_grantee_group {
        return Err(DomainError::denied(
            "nobody grants themselves a right (R-ACC-4: two keys): a colleague must do it",
        ));
    }
    if roles.iter().any(|r| matches!(r, OA | RA)) {
        return Ok(None);
    }
    held.iter()
        .find(|h| {
            h.right == request.right
                && match (&h.units, request.unit_id) {
                    (None, _) => true,
                    (Some(units), Some(unit)) => units.contains(&unit),
                    (Some(_), None) => false,
                }
                // A grant on one resource passes on that resource only.
                && match (h.resource.as_deref(), request.resource) {
                    (None, _) => true,
                    (Some(held), Some(asked)) => held == asked,
                    (Some(_), None) => false,
                }
                && request.actions.within(h.grantable)
                && if h.may_authorise {
                    request.grantable.within(h.grantable)
                } else {
                    request.grantable.is_empty() && !request.may_authorise
                }
        })
        .map(|h| Some(h.id))
        .ok_or_else(|| {
            DomainError::denied(format!(
                "the caller holds no grant of {:?} that lets them pass these actions on here (grant options of the same right, on a scope covering this one; passing grant options on needs authorise)",
                request.right
            ))
        })
}

impl Action {
    /// Whether the action changes how a person signs in on its own (the
    /// rest, a changed e-mail or login id, is UpdateUser's to tell):
    /// guarded by [`authorize_sign_in_change`].
    pub fn changes_sign_in(self) -> bool {
        // UnlockLogin: lifting a lock gives a guesser five more tries at
        // the password; repeated, it defeats the lockout (and resets its
        // doubling). Administrators and people who delegate are unlocked
        // by the operator (R-ACC-6) or an organisation administrator.
        matches!(self, RemoveAuthenticator | ManageActivation | UnlockLogin)
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        CreateOrganisation => "create organisations",
        ReadOrganisation => "read this organisation",
        UpdateOrganisation => "change this organisation",
        ReadSettings => "read this organisation's settings",
        UpdateSettings => "change this organisation's settings",
        SetLicenceCount => "change the licence count",
        ReadUnits => "read this organisation's units",
        ManageUnits => "change this organisation's units",
        CreateUser => "create this user",
        ReadUser => "read this user",
        ListUsers => "list this organisation's users",
        UpdateUser => "change this user",
        ChangeRoles => "change this user's roles",
        DeactivateUser => "deactivate this user",
        ReactivateUser => "reactivate this user",
        DeleteUser => "delete this user",
        ReadUserHistory => "read this user's history",
        CreateApiToken => "create an API token for another person (API tokens are for the caller themselves)",
        ManageApiTokens => "manage API tokens of this organisation",
        ManageActivation => "send activation for this user",
        DecideAnonymityRequests => "decide anonymity requests of this organisation",
        ManageMailQueue => "manage the mail queue",
        ImportUsers => "import users into this organisation",
        ImportLegacyUsers => "import users from a legacy system into this organisation",
        ReadImports => "read this organisation's imports",
        ManageUserCertificates => "manage this organisation's user certificates",
        ManageOrganisationCertificates => "manage this organisation's organisation and system certificates",
        ReadCertificates => "read this organisation's certificates",
        ReadCertificateAuthority => "read the certificate authority",
        UnlockLogin => "unlock this user's login",
        SendPasswordReset => "send this user a password reset link",
        RemoveAuthenticator => "remove this user's authenticator app",
        ManageSessions => "see or end this user's sessions",
        GrantAdminLevels => "grant or revoke admin levels in this organisation",
        ReadAdminLevels => "see the admin levels of this organisation",
        ManageGrants => "grant or revoke rights in this organisation",
        ReadGrants => "see the grants of this organisation",
        ShareAccess => "share this user's resources",
        ReadShares => "see the shares of this organisation",
        ManageGroups => "create or delete groups of this organisation",
        ManageGroupMembers => "add or remove members of this organisation's groups",
        ReadGroups => "see the groups of this organisation",
        ReadJoinRequests => "see the requests to join this organisation",
        DecideJoinRequests => "decide requests to join this organisation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(org: Uuid, roles: Vec<Role>) -> Caller {
        Caller::new(Principal::Member {
            user_id: Uuid::now_v7(),
            organisation_id: org,
            roles,
            levels: Vec::new(),
        })
    }

    #[test]
    fn every_action_has_exactly_one_row() {
        for action in Action::ALL {
            assert_eq!(
                POLICY.iter().filter(|(a, ..)| a == action).count(),
                1,
                "{action:?} needs exactly one policy row"
            );
        }
        assert_eq!(POLICY.len(), Action::ALL.len(), "a row for an action twice");
    }

    #[test]
    fn other_organisation_is_always_denied() {
        let org = Uuid::now_v7();
        let caller = member(Uuid::now_v7(), vec![OA, UA, RA]);
        assert!(authorize(&caller, ReadOrganisation, Target::organisation(org)).is_err());
        let own = member(org, vec![OA]);
        assert!(authorize(&own, ReadOrganisation, Target::organisation(org)).is_ok());
    }

    fn level(level: u8, units: Option<&[Uuid]>) -> HeldLevel {
        HeldLevel {
            level,
            units: units.map(Arc::from),
        }
    }

    #[test]
    fn a_unit_level_covers_its_subtree_and_nothing_else() {
        let (north, below, south) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let held = level(LEVEL_3, Some(&[north, below]));
        assert!(held.covers(Some(north)) && held.covers(Some(below)));
        assert!(!held.covers(Some(south)) && !held.covers(None));
        assert!(level(LEVEL_3, None).covers(None));
        assert_eq!(held.unit_id(), Some(north));
    }

    #[test]
    fn ceilings_scopes_and_two_keys() {
        let org = Uuid::now_v7();
        let (north, below, south) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let granter = member(org, vec![U]);
        let grantee = Uuid::now_v7();
        let change = |level, unit_id, grantee_unit| LevelChange {
            grantee,
            level,
            unit_id,
            grantee_unit,
        };
        let second = [level(LEVEL_2, Some(&[north, below]))];
        assert!(authorize_level_grant(&granter, &second, change(3, Some(below), Some(below)), false).is_ok());
        assert!(authorize_level_grant(&granter, &second, change(2, Some(below), Some(below)), false).is_err());
        assert!(authorize_level_grant(&granter, &second, change(3, Some(south), Some(below)), false).is_err());
        assert!(authorize_level_grant(&granter, &second, change(3, None, Some(below)), false).is_err());
        assert!(authorize_level_grant(&granter, &second, change(3, Some(north), Some(south)), false).is_err());
        let third = [level(LEVEL_3, None)];
        assert!(authorize_level_grant(&granter, &third, change(4, None, None), false).is_err());
        // Two keys: not even an organisation administrator grants themselves.
        let admin = member(org, vec![OA]);
        let own = LevelChange {
            grantee: admin.user_id().unwrap(),
            ..change(4, None, None)
        };
        assert!(authorize_level_grant(&admin, &[], own, false).is_err());
        assert!(authorize_level_grant(&admin, &[], own, true).is_ok());
        assert!(authorize_level_grant(&admin, &[], change(1, None, None), false).is_ok());
    }

    #[test]
    fn grants_pass_on_within_options_scope_and_authorise() {
        let org = Uuid::now_v7();
        let (north, below) = (Uuid::now_v7(), Uuid::now_v7());
        let holder = member(org, vec![U]);
        let read = Actions {
            read: true,
            edit: false,
        };
        let both = Actions { read: true, edit: true };
        let none = Actions::default();
        let held = |may_authorise| HeldGrant {
            id: Uuid::now_v7(),
            right: "tax.vat".into(),
            units: Some(Arc::from(vec![north, below])),
            resource: None,
            grantable: read,
            may_authorise,
        };
        let request = |actions, grantable, may_authorise, unit_id| GrantRequest {
            grantee: Uuid::now_v7(),
            caller_in_grantee_group: false,
            right: "tax.vat",
            unit_id,
            resource: None,
            actions,
            grantable,
            may_authorise,
        };
        let plain = [held(false)];
        assert_eq!(
            authorize_grant(&holder, &plain, request(read, none, false, Some(below))).unwrap(),
            Some(plain[0].id)
        );
        // Beyond the options, the scope, or passing options on unauthorised.
        assert!(authorize_grant(&holder, &plain, request(both, none, false, Some(below))).is_err());
        assert!(authorize_grant(&holder, &plain, request(read, none, false, None)).is_err());
        assert!(authorize_grant(&holder, &plain, request(read, read, false, Some(below))).is_err());
        assert!(authorize_grant(&holder, &plain, request(read, none, true, Some(below))).is_err());
        let authorising = [held(true)];
        assert!(authorize_grant(&holder, &authorising, request(read, read, true, Some(north))).is_ok());
        let other_right = GrantRequest {
            right: "payroll",
            ..request(read, none, false, Some(north))
        };
        assert!(authorize_grant(&holder, &authorising, other_right).is_err());
        // Held on the unit: passed on for one resource there. Held on one
        // resource: that resource only, never the whole scope.
        let one = GrantRequest {
            resource: Some("invoice:113"),
            ..request(read, none, false, Some(north))
        };
        assert!(authorize_grant(&holder, &plain, one).is_ok());
        let on_resource = [HeldGrant {
            resource: Some("invoice:113".into()),
            ..held(false)
        }];
        assert!(authorize_grant(&holder, &on_resource, one).is_ok());
        let other = GrantRequest {
            resource: Some("invoice:114"),
            ..one
        };
        assert!(authorize_grant(&holder, &on_resource, other).is_err());
        assert!(authorize_grant(&holder, &on_resource, request(read, none, false, Some(north))).is_err());
        // Administrators grant on nobody's strength, never to themselves.
        let admin = member(org, vec![RA]);
        assert_eq!(
            authorize_grant(&admin, &[], request(both, both, true, None)).unwrap(),
            None
        );
        let own = GrantRequest {
            grantee: admin.user_id().unwrap(),
            ..request(read, none, false, None)
        };
        assert!(authorize_grant(&admin, &[], own).is_err());
    }

    #[test]
    fn operator_sees_only_administrators() {
        let op = Caller::new(Principal::Operator {
            token_id: Uuid::now_v7(),
        });
        let org = Uuid::now_v7();
        assert!(authorize(&op, ReadUser, Target::user(org, Uuid::now_v7(), true, None)).is_ok());
        assert!(authorize(&op, ReadUser, Target::user(org, Uuid::now_v7(), false, None)).is_err());
    }
}
