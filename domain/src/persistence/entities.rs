//! sea-orm entities. They stay inside `persistence`: the rest of the domain
//! works with `crate::model` types.

pub mod organisation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "organisations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub cvr: String,
        /// JSON array of strings.
        pub ean_numbers: String,
        pub allowed_identification_means: String,
        pub join_requests_allowed: bool,
        pub certificate_kinds: String,
        pub deletion_policy: String,
        pub max_administrators: i32,
        pub licence_count: i32,
        /// Users holding a licence (R-ORG-4), moved in the transaction that
        /// changes a user's state; see `services::take_licences`.
        pub licences_used: i64,
        pub billing_name: String,
        pub billing_address: String,
        pub billing_email: String,
        pub billing_reference: String,
        /// Every login needs a second factor (R-AUTH-3).
        pub second_factor_required: bool,
        /// The client's request id of the create (AIP-155), unique when set.
        pub create_request_id: Option<String>,
        pub version: i64,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod unit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "units")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub parent_id: Option<Uuid>,
        pub kind: String,
        pub name: String,
        pub number: Option<String>,
        pub created_at: i64,
        /// The client's request id of the create, unique per organisation.
        pub create_request_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub state: String,
        pub first_name: String,
        pub surname: String,
        pub email: String,
        /// `normalise::key` of `email`: the partial unique index
        /// `users_live_email` is on it. None only on a row that migration 15
        /// found duplicating an older live user's address.
        pub email_key: Option<String>,
        pub username: Option<String>,
        /// `normalise::key` of `username` (`users_live_username`).
        pub username_key: Option<String>,
        /// `normalise::search_text` of the names and e-mail (R-USR-8).
        pub search_text: String,
        pub cpr_hash: Option<String>,
        pub cpr_ciphertext: Option<String>,
        pub birth_date: Option<String>,
        pub unit_id: Option<Uuid>,
        pub phone: Option<String>,
        pub language: String,
        pub external_ids: String,
        pub identification_means: String,
        pub signing_right: bool,
        /// May sign through the organisation certificate (R-CERT-3).
        pub signs_with_organisation_certificate: bool,
        pub anonymous: bool,
        /// The address in force was proved to reach the user (R-USR-6).
        pub email_verified: bool,
        /// A new address waiting for its verification link to be opened.
        pub pending_email: Option<String>,
        pub legacy_id: Option<String>,
        pub deactivated_until: Option<i64>,
        pub activated_at: Option<i64>,
        pub create_request_id: Option<String>,
        pub version: i64,
        pub created_at: i64,
        pub updated_at: i64,
        /// No person's mailbox: never mailed, no password (R-ACC-5).
        pub service_account: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod user_role {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_roles")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub role: String,
        pub organisation_id: Uuid,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod history_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "history_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Option<Uuid>,
        pub subject_kind: String,
        pub subject_id: Uuid,
        pub occurred_at: i64,
        pub actor: String,
        /// The actor's name and e-mail as they were when they acted.
        pub actor_name: String,
        pub actor_email: Option<String>,
        pub on_behalf_of: Option<String>,
        pub activity: String,
        /// JSON array of {field, before, after}.
        pub changes: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub kind: String,
        pub organisation_id: Option<Uuid>,
        pub user_id: Option<Uuid>,
        pub name: String,
        pub token_hash: String,
        pub created_by: String,
        pub created_at: i64,
        pub expires_at: Option<i64>,
        pub revoked_at: Option<i64>,
        /// The client's request id of the create, unique per user.
        pub create_request_id: Option<String>,
        /// Sessions: when last presented, to the minute (idle expiry).
        pub last_used_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox_mail {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox_mails")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Option<Uuid>,
        pub kind: String,
        pub recipient: String,
        pub payload: String,
        pub state: String,
        pub attempts: i32,
        pub next_attempt_at: i64,
        pub claimed_by: Option<String>,
        pub lease_until: Option<i64>,
        pub last_error: Option<String>,
        pub trace_context: Option<String>,
        pub created_at: i64,
        pub sent_at: Option<i64>,
        /// When the content dies (a login code, a single-use link): not
        /// sent after it. None: sent however late.
        pub deliver_before: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod activation_secret {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "activation_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub kind: String,
        pub secret_hash: String,
        pub failed_attempts: i32,
        pub expires_at: i64,
        pub used_at: Option<i64>,
        pub revoked_at: Option<i64>,
        pub created_at: i64,
        /// Not usable before (an e-mail change asked by someone else).
        pub usable_from: Option<i64>,
        /// The request id of the SendActivation that mailed this link, and
        /// its request's fingerprint: a retry finds the link and sends
        /// nothing (AIP-155).
        pub send_request_id: Option<String>,
        pub send_request_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod password_credential {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "password_credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        /// argon2id PHC string.
        pub phc: String,
        pub set_at: i64,
        pub failed_attempts: i32,
        pub lockouts: i32,
        pub locked_until: Option<i64>,
        pub last_login_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod login_challenge {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "login_challenges")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        /// SHA-256 of the challenge token the client holds.
        pub token_hash: String,
        /// `MAIL_CODE` or `TOTP`.
        pub method: String,
        /// Keyed hash of a mailed code; none for TOTP.
        pub code_hash: Option<String>,
        pub attempts_left: i32,
        pub created_at: i64,
        pub expires_at: i64,
        pub used_at: Option<i64>,
        pub peer: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod totp_credential {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "totp_credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        /// The shared secret, sealed with the server's encryption key.
        pub secret_sealed: String,
        pub created_at: i64,
        /// Set once a code from the app proved the enrolment.
        pub confirmed_at: Option<i64>,
        /// The last time step whose code was accepted (a code works once).
        pub last_step: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An admin level (R-ACC-2) held on the organisation (`unit_id` none) or on
/// one unit and its subtree.
pub mod admin_level {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "admin_levels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub user_id: Uuid,
        /// 1 (strongest) to 4 (views only).
        pub level: i16,
        pub unit_id: Option<Uuid>,
        /// The unit id, or "" for the organisation: one level per person
        /// and scope.
        pub scope_key: String,
        /// How history names who granted it (`user:<id>`).
        pub granted_by: String,
        pub granted_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A right given to a user (R-ACC-3); see migration 63.
pub mod grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        /// The user holding it; none when a group does.
        pub grantee_id: Option<Uuid>,
        pub right_name: String,
        /// None: the whole organisation.
        pub unit_id: Option<Uuid>,
        pub can_read: bool,
        pub can_edit: bool,
        pub passes_read: bool,
        pub passes_edit: bool,
        pub may_authorise: bool,
        /// The grant this one was made on the strength of; none: made by
        /// an organisation or rights administrator.
        pub parent_id: Option<Uuid>,
        pub granter_id: Option<Uuid>,
        pub granted_by: String,
        pub granted_at: i64,
        /// The group holding it (R-ACC-7); none when a user does.
        pub grantee_group_id: Option<Uuid>,
        /// The one resource it covers (R-ACC-3), named by the service that
        /// checks the right; none: everything in its scope.
        pub resource: Option<String>,
        /// The client's request id of CreateGrant (AIP-155), and the
        /// fingerprint of what that request asked (`request_fingerprint`).
        pub create_request_id: Option<String>,
        pub create_request_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's own resources shared with a colleague (R-ACC-5).
pub mod share {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "shares")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub owner_id: Uuid,
        pub grantee_id: Uuid,
        /// Edit as well as read.
        pub can_edit: bool,
        /// The member who shared (the owner, or an administrator); none:
        /// not a member.
        pub sharer_id: Option<Uuid>,
        pub shared_by: String,
        pub shared_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A member's request for an admin level or a grant (R-ACC-9).
pub mod rights_request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rights_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub requester_id: Uuid,
        /// `ADMIN_LEVEL` or `GRANT`.
        pub kind: String,
        pub level: Option<i16>,
        pub right_name: Option<String>,
        pub can_read: bool,
        pub can_edit: bool,
        pub unit_id: Option<Uuid>,
        pub reason: String,
        /// `OPEN`, `APPROVED` or `REJECTED`.
        pub state: String,
        pub created_at: i64,
        pub decided_by: Option<String>,
        pub decided_at: Option<i64>,
        pub decision_note: Option<String>,
        /// The role asked for (kind `ROLE`).
        pub role: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod notification {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notifications")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub user_id: Uuid,
        pub organisation_id: Uuid,
        pub kind: String,
        pub title: String,
        pub body: String,
        pub subject_id: Option<Uuid>,
        pub created_at: i64,
        pub read_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod notification_preference {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notification_preferences")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        pub channel: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod anonymity_request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "anonymity_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub user_id: Uuid,
        pub state: String,
        pub reason: String,
        pub created_at: i64,
        pub decided_by: Option<String>,
        pub decided_at: Option<i64>,
        pub decision_note: Option<String>,
        pub new_user_id: Option<Uuid>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod sweep_run {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sweep_runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub period_start: i64,
        pub claimed_by: String,
        pub claimed_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod import_job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "import_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub kind: String,
        pub state: String,
        pub validate_only: bool,
        pub file_name: String,
        pub file_bytes: i64,
        pub encoding: Option<String>,
        pub requester_id: Uuid,
        pub requester_name: String,
        pub request_id: Option<String>,
        pub rows: Option<i64>,
        /// The checkpoint: data rows done, moved with each batch.
        pub processed: i64,
        pub applied: i64,
        pub failed: i64,
        pub skipped: i64,
        pub cancel_requested: bool,
        pub claimed_by: Option<String>,
        pub lease_until: Option<i64>,
        pub failure_reason: Option<String>,
        pub failure_message: Option<String>,
        pub created_at: i64,
        pub started_at: Option<i64>,
        pub finished_at: Option<i64>,
        pub updated_at: i64,
        pub file_deleted_at: Option<i64>,
        /// W3C traceparent of the CreateImport call (R-OPS-3).
        pub trace_context: Option<String>,
        /// Runs that ended in an error since the checkpoint last moved.
        pub failed_runs: i32,
        /// Validate-only: the administrator seats its rolled-back batches
        /// took, counted as taken by the next.
        pub admin_seats_taken: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod import_chunk {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "import_chunks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i32,
        /// Sealed with the CPR encryption key (the file holds CPR
        /// numbers); false only for pieces stored before sealing began.
        pub data: Vec<u8>,
        pub sealed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod import_error {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "import_errors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub file_row: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub column_name: String,
        pub reason: String,
        pub message: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod import_created_user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "import_created_users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod certificate {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, Default, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "certificates")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub kind: String,
        pub state: String,
        pub holder_id: Option<Uuid>,
        pub contact_id: Uuid,
        pub label: Option<String>,
        pub usages: String,
        pub email: Option<String>,
        pub renews_id: Option<Uuid>,
        pub pickup_token_hash: Option<String>,
        pub pickup_expires_at: Option<i64>,
        pub serial: Option<String>,
        pub subject: Option<String>,
        pub search_text: Option<String>,
        pub key_algorithm: Option<String>,
        pub not_before: Option<i64>,
        pub not_after: Option<i64>,
        pub der: Option<Vec<u8>>,
        /// SHA-256 (hex) of the certified SubjectPublicKeyInfo; none on
        /// orders and on certificates issued before it was kept.
        pub public_key_hash: Option<String>,
        pub revoked_at: Option<i64>,
        pub revocation_reason: Option<String>,
        pub warned30_at: Option<i64>,
        pub warned7_at: Option<i64>,
        pub version: i64,
        pub created_at: i64,
        pub updated_at: i64,
        /// The client's request id of OrderCertificate (AIP-155), and the
        /// fingerprint of what that request asked (`request_fingerprint`).
        pub create_request_id: Option<String>,
        pub create_request_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    // For the pickup's one read of the order with its organisation and
    // holder (a join, not three round trips).
    impl Related<super::organisation::Entity> for Entity {
        fn to() -> RelationDef {
            Entity::belongs_to(super::organisation::Entity)
                .from(Column::OrganisationId)
                .to(super::organisation::Column::Id)
                .into()
        }
    }

    impl Related<super::user::Entity> for Entity {
        fn to() -> RelationDef {
            Entity::belongs_to(super::user::Entity)
                .from(Column::HolderId)
                .to(super::user::Column::Id)
                .into()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod crl_publication {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "crl_publications")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub crl_number: i64,
        pub this_update: i64,
        pub next_update: i64,
        pub revoked_count: i64,
        pub der: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod group {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "groups")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        /// `CUSTOM` or `SYSTEM`.
        pub kind: String,
        pub name: String,
        pub description: String,
        /// A system group's production unit (its id is the unit's too).
        pub unit_id: Option<Uuid>,
        pub created_by: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod group_member {
    use sea_orm::entity::prelude::*;

    /// A custom group's member, added by hand (system groups have none:
    /// their members are the users placed in the unit's subtree).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "group_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub group_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: Uuid,
        /// The member of the organisation who added them; none: not a member.
        pub adder_id: Option<Uuid>,
        pub added_by: String,
        pub added_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A person's request to join an organisation (R-ORG-3); see migration 70.
pub mod join_request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "join_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organisation_id: Uuid,
        pub first_name: String,
        pub surname: String,
        pub email: String,
        pub email_key: String,
        /// YYYY-MM-DD: the user made on approval activates with a code and
        /// this date (no CPR number travels through an open form).
        pub birth_date: String,
        pub language: String,
        pub reason: String,
        pub state: String,
        /// The hash of the confirmation link's token, while unconfirmed.
        pub token_hash: Option<String>,
        pub expires_at: i64,
        /// When the last confirmation link went out (re-sends are spaced).
        pub mailed_at: i64,
        pub created_at: i64,
        pub confirmed_at: Option<i64>,
        pub decided_by: Option<String>,
        pub decided_at: Option<i64>,
        pub decision_note: Option<String>,
        /// The user made on approval.
        pub user_id: Option<Uuid>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
