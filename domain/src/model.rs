//! The domain's own types: what the rules talk about. Persistence maps rows to
//! these; the service maps these to protobuf.

use uuid::Uuid;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// A closed set of names stored as text: `as_str`, `Display`, `FromStr`, `ALL`.
#[macro_export]
macro_rules! string_enum_pub {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}

string_enum_pub!(
    /// What a history event records (R-USR-2, R-USR-7): every write names
    /// one, and the history filter accepts these only.
    Activity {
        ActivationCodeCreated => "ACTIVATION_CODE_CREATED",
        ActivationSent => "ACTIVATION_SENT",
        AnonymityRejected => "ANONYMITY_REJECTED",
        AnonymityRequested => "ANONYMITY_REQUESTED",
        ApiTokenCreated => "API_TOKEN_CREATED",
        ApiTokenRevoked => "API_TOKEN_REVOKED",
        EmailVerified => "EMAIL_VERIFIED",
        OrganisationCreated => "ORGANISATION_CREATED",
        OrganisationUpdated => "ORGANISATION_UPDATED",
        SettingsUpdated => "SETTINGS_UPDATED",
        LicenceCountChanged => "LICENCE_COUNT_CHANGED",
        UnitCreated => "UNIT_CREATED",
        UnitDeleted => "UNIT_DELETED",
        UnitUpdated => "UNIT_UPDATED",
        UserActivated => "USER_ACTIVATED",
        UserClosedForAnonymity => "USER_CLOSED_FOR_ANONYMITY",
        UserCreated => "USER_CREATED",
        UserUpdated => "USER_UPDATED",
        UserDeactivated => "USER_DEACTIVATED",
        UserReactivated => "USER_REACTIVATED",
        UserDeleted => "USER_DELETED",
        CertificateOrdered => "CERTIFICATE_ORDERED",
        CertificateIssued => "CERTIFICATE_ISSUED",
        CertificateOrderDeleted => "CERTIFICATE_ORDER_DELETED",
        CertificateRevoked => "CERTIFICATE_REVOKED",
        CertificateSuperseded => "CERTIFICATE_SUPERSEDED",
        CertificateExpired => "CERTIFICATE_EXPIRED",
        CertificateContactChanged => "CERTIFICATE_CONTACT_CHANGED",
        LoginSucceeded => "LOGIN_SUCCEEDED",
        LoginFailed => "LOGIN_FAILED",
        LoginLocked => "LOGIN_LOCKED",
        LoginUnlocked => "LOGIN_UNLOCKED",
        LoggedOut => "LOGGED_OUT",
        PasswordResetSent => "PASSWORD_RESET_SENT",
        PasswordReset => "PASSWORD_RESET",
        SecondFactorRequested => "SECOND_FACTOR_REQUESTED",
        SecondFactorFailed => "SECOND_FACTOR_FAILED",
        AuthenticatorEnrolled => "AUTHENTICATOR_ENROLLED",
        AuthenticatorRemoved => "AUTHENTICATOR_REMOVED",
        SessionRevoked => "SESSION_REVOKED",
        AdminLevelGranted => "ADMIN_LEVEL_GRANTED",
        AdminLevelRevoked => "ADMIN_LEVEL_REVOKED",
        GrantCreated => "GRANT_CREATED",
        GrantRevoked => "GRANT_REVOKED",
        RightsRequested => "RIGHTS_REQUESTED",
        RightsRequestApproved => "RIGHTS_REQUEST_APPROVED",
        RightsRequestRejected => "RIGHTS_REQUEST_REJECTED",
        AccessShared => "ACCESS_SHARED",
        ShareRevoked => "SHARE_REVOKED",
        NotificationPreferencesChanged => "NOTIFICATION_PREFERENCES_CHANGED",
        GroupCreated => "GROUP_CREATED",
        GroupDeleted => "GROUP_DELETED",
        GroupMemberAdded => "GROUP_MEMBER_ADDED",
        GroupMemberRemoved => "GROUP_MEMBER_REMOVED",
        JoinRequested => "JOIN_REQUESTED",
        JoinRequestApproved => "JOIN_REQUEST_APPROVED",
        JoinRequestRejected => "JOIN_REQUEST_REJECTED",
    }
);

string_enum_pub!(
    /// R-ACC-7: a custom group is made by an organisation administrator and
    /// its members are added by hand; a system group stands for a
    /// production unit and its members are whoever is placed in it.
    GroupKind {
        Custom => "CUSTOM",
        System => "SYSTEM",
    }
);

string_enum_pub!(
    /// How the second step of a login is proved (R-AUTH-3).
    SecondFactorMethod {
        MailCode => "MAIL_CODE",
        Totp => "TOTP",
    }
);

string_enum_pub!(
    /// R-USR-2. `Deleted` is final.
    UserState {
        PendingActivation => "PENDING_ACTIVATION",
        Active => "ACTIVE",
        Deactivated => "DEACTIVATED",
        Deleted => "DELETED",
    }
);

impl UserState {
    /// Users in these states may act (their tokens work) and may be given
    /// work (notifications, tokens).
    pub fn is_standing(self) -> bool {
        matches!(self, Self::PendingActivation | Self::Active)
    }
}

/// R-ORG-4: whether a user holds a licence and, if an administrator, an
/// administrator seat. Standing users do; so does a deactivation with an end
/// time, whose seat is kept for the return, so that the worker's timed
/// reactivation never exceeds a limit. An open-ended deactivation and
/// deletion free them. Every licence and seat rule asks this one function.
pub fn holds_seat(state: UserState, deactivated_until: Option<Millis>) -> bool {
    match state {
        UserState::PendingActivation | UserState::Active => true,
        UserState::Deactivated => deactivated_until.is_some(),
        UserState::Deleted => false,
    }
}

string_enum_pub!(
    /// Roles a user holds within an organisation (R-ACC-1).
    Role {
        OrganisationAdmin => "ORGANISATION_ADMIN",
        UserAdmin => "USER_ADMIN",
        RightsAdmin => "RIGHTS_ADMIN",
        User => "USER",
    }
);

impl Role {
    pub fn is_administrator(self) -> bool {
        !matches!(self, Self::User)
    }
}

string_enum_pub!(Language { Da => "da", Sv => "sv", En => "en" });

string_enum_pub!(
    DeletionPolicy {
        AllowDelete => "ALLOW_DELETE",
        DeactivateOnly => "DEACTIVATE_ONLY",
    }
);

string_enum_pub!(
    IdentificationMeans {
        MitId => "MITID",
        Password => "PASSWORD",
        LocalIdp => "LOCAL_IDP",
        NemLogIn => "NEMLOG_IN",
    }
);

string_enum_pub!(
    CertificateKind {
        Employee => "EMPLOYEE",
        Organisation => "ORGANISATION",
        System => "SYSTEM",
    }
);

string_enum_pub!(
    UnitKind {
        Department => "DEPARTMENT",
        ProductionUnit => "PRODUCTION_UNIT",
        TaxUnit => "TAX_UNIT",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BillingDetails {
    pub name: String,
    pub address: String,
    pub email: String,
    pub reference: String,
}

#[derive(Debug, Clone)]
pub struct Organisation {
    pub id: Uuid,
    pub name: String,
    pub cvr: String,
    pub ean_numbers: Vec<String>,
    pub settings: OrganisationSettings,
    pub licences_used: i64,
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationSettings {
    pub allowed_identification_means: Vec<IdentificationMeans>,
    pub join_requests_allowed: bool,
    pub certificate_kinds: Vec<CertificateKind>,
    pub deletion_policy: DeletionPolicy,
    /// 0: no limit.
    pub max_administrators: i32,
    pub licence_count: i32,
    pub billing: BillingDetails,
    /// Every login needs a second factor: the authenticator app's code for
    /// users who enrolled one, else a code mailed at each login (R-AUTH-3).
    pub second_factor_required: bool,
}

#[derive(Debug, Clone)]
pub struct Unit {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub kind: UnitKind,
    pub name: String,
    pub number: Option<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub state: UserState,
    pub first_name: String,
    pub surname: String,
    pub email: String,
    /// Whether `email` was proved to reach the user (R-USR-6).
    pub email_verified: bool,
    /// A new address that takes over once the link mailed to it is opened.
    pub pending_email: Option<String>,
    pub username: Option<String>,
    /// `DDMMYY-XXXX`, never more.
    pub cpr_masked: Option<String>,
    pub birth_date: Option<String>,
    pub unit_id: Option<Uuid>,
    pub phone: Option<String>,
    pub language: Language,
    pub external_ids: Vec<String>,
    pub roles: Vec<Role>,
    pub identification_means: Vec<IdentificationMeans>,
    pub signing_right: bool,
    /// May sign through the organisation certificate (R-CERT-3).
    pub signs_with_organisation_certificate: bool,
    pub anonymous: bool,
    /// R-ACC-5: managed through shared access, never mailed.
    pub service_account: bool,
    pub legacy_id: Option<String>,
    pub deactivated_until: Option<Millis>,
    pub version: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl User {
    pub fn is_administrator(&self) -> bool {
        self.roles.iter().any(|r| r.is_administrator())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

#[derive(Debug, Clone)]
pub struct HistoryEvent {
    pub id: Uuid,
    pub subject_id: Uuid,
    pub activity: Activity,
    pub actor: String,
    /// The actor's name and e-mail as they were at the time.
    pub actor_name: String,
    pub actor_email: Option<String>,
    pub on_behalf_of: Option<String>,
    pub occurred_at: Millis,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: Uuid,
    pub organisation_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub name: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

/// One page of a keyset listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}
