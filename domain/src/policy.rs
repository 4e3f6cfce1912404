//! Who may do what (R-ACC-1, R-ACC-6, R-ACC-8): one table, consulted by every
//! domain entry point before it changes anything.

use uuid::Uuid;

use crate::error::DomainError;
use crate::model::Role;

/// Who is calling, as the bearer token proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The platform provider (R-ORG-2), above organisations.
    Operator { token_id: Uuid },
    /// A user of one organisation, with the roles they hold there.
    Member {
        user_id: Uuid,
        organisation_id: Uuid,
        roles: Vec<Role>,
    },
    /// The worker acting on a schedule.
    System { task: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// Set when the caller acts for another person (R-AUTH-3).
    pub on_behalf_of: Option<Uuid>,
    /// The person behind a member caller, as they are now: history keeps
    /// their name and e-mail as they were when they acted.
    pub identity: Option<Identity>,
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
            identity: None,
        }
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
            Principal::Member { user_id, .. } => format!("user:{user_id}"),
            Principal::System { task } => format!("system:{task}"),
        }
    }

    pub fn on_behalf_of(&self) -> Option<String> {
        self.on_behalf_of.map(|id| format!("user:{id}"))
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

/// The policy table: per action, whether operators may act and which roles of
/// the target organisation may. `self_allowed` lets a member act on their own
/// user record.
const POLICY: &[(Action, OperatorScope, &[Role], bool)] = &[
    (CreateOrganisation, Yes, &[], false),
    (ReadOrganisation, Yes, &[OA, UA, RA, U], false),
    (UpdateOrganisation, Yes, &[OA], false),
    (ReadSettings, Yes, &[OA, UA], false),
    (UpdateSettings, No, &[OA], false),
    (SetLicenceCount, Yes, &[], false),
    (ReadUnits, Yes, &[OA, UA, RA, U], false),
    (ManageUnits, No, &[OA], false),
    (CreateUser, AdministratorsOnly, &[UA], false),
    (ReadUser, AdministratorsOnly, &[OA, UA, RA], true),
    (ListUsers, AdministratorsOnly, &[OA, UA, RA], false),
    (UpdateUser, No, &[UA], false),
    (ChangeRoles, No, &[OA], false),
    (DeactivateUser, AdministratorsOnly, &[UA], false),
    (ReactivateUser, AdministratorsOnly, &[UA], false),
    (DeleteUser, No, &[UA], false),
    (ReadUserHistory, AdministratorsOnly, &[OA, UA], true),
    // R-AUTH-1: nobody, operator or administrator, obtains a credential that
    // acts as another person: a member makes API tokens for themselves only.
    (CreateApiToken, No, &[], true),
    // Listing and revoking other people's tokens acts as nobody.
    (ManageApiTokens, AdministratorsOnly, &[OA], false),
    (ManageActivation, AdministratorsOnly, &[UA], false),
    (DecideAnonymityRequests, No, &[UA], false),
    (ManageMailQueue, Yes, &[], false),
    // R-BULK: user administrators import into their own organisation;
    // operators import nothing. Rows that make administrators are checked
    // row by row by CreateUser's own ChangeRoles rule.
    (ImportUsers, No, &[UA], false),
    (ImportLegacyUsers, No, &[OA], false),
    (ReadImports, No, &[OA, UA], false),
    // R-CERT: user administrators look after user certificates, organisation
    // administrators after the organisation's own; operators after none
    // (R-ACC-6). Holders pick up, renew and (for a lost key) revoke their
    // own: the certificate service checks that person itself.
    (ManageUserCertificates, No, &[UA], false),
    (ManageOrganisationCertificates, No, &[OA], false),
    (ReadCertificates, No, &[OA, UA], false),
    (ReadCertificateAuthority, Yes, &[OA, UA, RA, U], false),
    // R-AUTH-2, R-ACC-6: user administrators unlock their users, the
    // operator organisation administrators (seed 001).
    (UnlockLogin, AdministratorsOnly, &[UA], false),
    (SendPasswordReset, AdministratorsOnly, &[UA], false),
    (RemoveAuthenticator, AdministratorsOnly, &[UA], false),
    (ManageSessions, AdministratorsOnly, &[UA], true),
];

fn row(action: Action) -> (OperatorScope, &'static [Role], bool) {
    POLICY
        .iter()
        .find(|(a, ..)| *a == action)
        .map(|(_, op, roles, own)| (*op, *roles, *own))
        .unwrap_or((No, &[], false))
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
}

impl Target {
    pub fn platform() -> Self {
        Self {
            organisation_id: None,
            user_id: None,
            user_is_administrator: false,
        }
    }

    pub fn organisation(id: Uuid) -> Self {
        Self {
            organisation_id: Some(id),
            user_id: None,
            user_is_administrator: false,
        }
    }

    pub fn user(organisation_id: Uuid, user_id: Uuid, is_administrator: bool) -> Self {
        Self {
            organisation_id: Some(organisation_id),
            user_id: Some(user_id),
            user_is_administrator: is_administrator,
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

/// [`authorize`] for an action on one existing user: NOT_FOUND when the user
/// is outside the caller's view (see [`sees_user`]).
pub fn authorize_on_user(caller: &Caller, action: Action, target: Target) -> Result<(), DomainError> {
    if let (Some(organisation_id), Some(user_id)) = (target.organisation_id, target.user_id)
        && !sees_user(caller, organisation_id, target.user_is_administrator)
    {
        return Err(DomainError::not_found("user", user_id));
    }
    authorize(caller, action, target)
}

pub fn authorize(caller: &Caller, action: Action, target: Target) -> Result<(), DomainError> {
    let (operator, roles, self_allowed) = row(action);
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
        } => {
            let same_org = target.organisation_id == Some(*organisation_id);
            let by_role = held.iter().any(|r| roles.contains(r));
            let on_self = self_allowed && target.user_id == Some(*user_id);
            same_org && (by_role || on_self)
        }
    };
    if allowed {
        Ok(())
    } else {
        Err(DomainError::denied(format!("the caller may not {}", describe(action))))
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

    #[test]
    fn operator_sees_only_administrators() {
        let op = Caller::new(Principal::Operator {
            token_id: Uuid::now_v7(),
        });
        let org = Uuid::now_v7();
        assert!(authorize(&op, ReadUser, Target::user(org, Uuid::now_v7(), true)).is_ok());
        assert!(authorize(&op, ReadUser, Target::user(org, Uuid::now_v7(), false)).is_err());
    }
}
