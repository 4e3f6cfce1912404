//! Schema migrations. Each file holds one change and is valid on SQLite and
//! PostgreSQL; the migration's name comes from its file name.
//!
//! Times are stored as milliseconds since the Unix epoch (`BIGINT`): the same
//! comparison works byte for byte on both backends, which the set-based sweeps
//! rely on.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_organisations;
mod m20261122_000002_create_units;
mod m20261122_000003_create_users;
mod m20261122_000004_create_user_roles;
mod m20261122_000005_create_history_events;
mod m20261122_000006_create_api_tokens;
mod m20261122_000007_create_user_uniqueness_indexes;
mod m20261122_000008_create_outbox_mails;
mod m20261122_000009_create_activation_secrets;
mod m20261122_000010_create_notifications;
mod m20261122_000011_create_notification_preferences;
mod m20261122_000012_create_anonymity_requests;
mod m20261122_000013_create_sweep_runs;
mod m20261123_000014_add_organisation_licences_used;
mod m20261202_000015_add_user_normalised_keys;
mod m20261202_000020_reserve_seats_of_timed_deactivations;
mod m20261202_000021_add_history_actor_names;
mod m20261202_000022_add_user_email_verification;
mod m20261202_000030_add_create_request_ids;
mod m20261202_000040_create_import_jobs;
mod m20261202_000050_create_certificates;
mod m20261202_000051_add_certificate_search_index;
mod m20261202_000052_add_user_organisation_signing;
mod m20261202_000053_add_import_trace_context;
mod m20261202_000060_create_password_credentials;
mod m20261203_000061_create_second_factor;
mod m20261203_000062_create_admin_levels;
mod m20261203_000063_create_grants;
mod m20261203_000064_create_rights_requests;
mod m20261203_000065_create_shares;
mod m20261203_000066_add_service_accounts;
mod m20261204_000067_create_groups;
mod m20261204_000068_add_group_grantees;
mod m20261204_000069_add_role_requests;
mod m20261204_000070_create_join_requests;
mod m20261204_000071_add_grant_resources;
mod m20261205_000072_store_crls_uncompressed;
mod m20261206_000073_cover_certificate_search_text;
mod m20261206_000074_count_failed_import_runs;
mod m20261206_000075_revoke_self_made_service_account_tokens;
mod m20261206_000076_hold_email_changes_asked_by_others;
mod m20261206_000077_allow_the_identification_means_people_hold;
mod m20261207_000078_count_admin_seats_a_check_took;
mod m20261207_000079_seal_import_chunks;
mod m20261207_000080_index_certificate_keys;
mod m20261207_000081_hash_compromised_keys;
mod m20261207_000082_index_unhashed_compromised_keys;
mod m20261207_000083_forget_deleted_people;
mod m20261207_000084_add_grant_and_order_request_ids;
mod m20261207_000085_add_outbox_deliver_before;
mod m20261207_000086_add_activation_send_request_ids;

pub use m20261206_000075_revoke_self_made_service_account_tokens::revoke_self_made_service_account_tokens;
pub use m20261206_000077_allow_the_identification_means_people_hold::allow_the_means_people_hold;

/// Runs SQL written by hand (what both backends spell the same way and the
/// schema builder cannot express, such as partial indexes), in order.
pub(crate) async fn execute_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    for statement in statements {
        manager.get_connection().execute_unprepared(statement).await?;
    }
    Ok(())
}

/// [`execute_all`] on PostgreSQL; nothing on SQLite (for what only
/// PostgreSQL has: extensions, GIN indexes, column storage).
pub(crate) async fn execute_on_postgres(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != sea_orm_migration::sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    execute_all(manager, statements).await
}

/// Adds one column to `table` (a migration's whole `up`).
pub(crate) async fn add_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: ColumnDef,
) -> Result<(), DbErr> {
    let mut column = column;
    manager
        .alter_table(Table::alter().table(table).add_column(&mut column).to_owned())
        .await
}

/// Drops one column of `table` (the `down` of [`add_column`]).
pub(crate) async fn drop_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: impl IntoIden,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).drop_column(column).to_owned())
        .await
}

pub struct Migrator;

/// A migration applied in one transaction with its record, on SQLite too
/// (sea-orm-migration wraps only PostgreSQL's by default; SQLite's DDL is
/// transactional as well). Without it a SQLite migration stopped midway (a
/// killed pod, a full disk) left half its change committed, and the next
/// start failed on it for good ("duplicate column name"), or lost the rows
/// of a table being rebuilt.
struct Atomic(Box<dyn MigrationTrait>);

impl MigrationName for Atomic {
    fn name(&self) -> &str {
        self.0.name()
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Atomic {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.0.up(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.0.down(manager).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(self.0.use_transaction().unwrap_or(true))
    }
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let all: Vec<Box<dyn MigrationTrait>> = vec![
            Box::new(m20261122_000001_create_organisations::Migration),
            Box::new(m20261122_000002_create_units::Migration),
            Box::new(m20261122_000003_create_users::Migration),
            Box::new(m20261122_000004_create_user_roles::Migration),
            Box::new(m20261122_000005_create_history_events::Migration),
            Box::new(m20261122_000006_create_api_tokens::Migration),
            Box::new(m20261122_000007_create_user_uniqueness_indexes::Migration),
            Box::new(m20261122_000008_create_outbox_mails::Migration),
            Box::new(m20261122_000009_create_activation_secrets::Migration),
            Box::new(m20261122_000010_create_notifications::Migration),
            Box::new(m20261122_000011_create_notification_preferences::Migration),
            Box::new(m20261122_000012_create_anonymity_requests::Migration),
            Box::new(m20261122_000013_create_sweep_runs::Migration),
            Box::new(m20261123_000014_add_organisation_licences_used::Migration),
            Box::new(m20261202_000015_add_user_normalised_keys::Migration),
            Box::new(m20261202_000020_reserve_seats_of_timed_deactivations::Migration),
            Box::new(m20261202_000021_add_history_actor_names::Migration),
            Box::new(m20261202_000022_add_user_email_verification::Migration),
            Box::new(m20261202_000030_add_create_request_ids::Migration),
            Box::new(m20261202_000040_create_import_jobs::Migration),
            Box::new(m20261202_000050_create_certificates::Migration),
            Box::new(m20261202_000051_add_certificate_search_index::Migration),
            Box::new(m20261202_000052_add_user_organisation_signing::Migration),
            Box::new(m20261202_000053_add_import_trace_context::Migration),
            Box::new(m20261202_000060_create_password_credentials::Migration),
            Box::new(m20261203_000061_create_second_factor::Migration),
            Box::new(m20261203_000062_create_admin_levels::Migration),
            Box::new(m20261203_000063_create_grants::Migration),
            Box::new(m20261203_000064_create_rights_requests::Migration),
            Box::new(m20261203_000065_create_shares::Migration),
            Box::new(m20261203_000066_add_service_accounts::Migration),
            Box::new(m20261204_000067_create_groups::Migration),
            Box::new(m20261204_000068_add_group_grantees::Migration),
            Box::new(m20261204_000069_add_role_requests::Migration),
            Box::new(m20261204_000070_create_join_requests::Migration),
            Box::new(m20261204_000071_add_grant_resources::Migration),
            Box::new(m20261205_000072_store_crls_uncompressed::Migration),
            Box::new(m20261206_000073_cover_certificate_search_text::Migration),
            Box::new(m20261206_000074_count_failed_import_runs::Migration),
            Box::new(m20261206_000075_revoke_self_made_service_account_tokens::Migration),
            Box::new(m20261206_000076_hold_email_changes_asked_by_others::Migration),
            Box::new(m20261206_000077_allow_the_identification_means_people_hold::Migration),
            Box::new(m20261207_000078_count_admin_seats_a_check_took::Migration),
            Box::new(m20261207_000079_seal_import_chunks::Migration),
            Box::new(m20261207_000080_index_certificate_keys::Migration),
            Box::new(m20261207_000081_hash_compromised_keys::Migration),
            Box::new(m20261207_000082_index_unhashed_compromised_keys::Migration),
            Box::new(m20261207_000083_forget_deleted_people::Migration),
            Box::new(m20261207_000084_add_grant_and_order_request_ids::Migration),
            Box::new(m20261207_000085_add_outbox_deliver_before::Migration),
            Box::new(m20261207_000086_add_activation_send_request_ids::Migration),
        ];
        all.into_iter()
            .map(|migration| Box::new(Atomic(migration)) as Box<dyn MigrationTrait>)
            .collect()
    }
}
