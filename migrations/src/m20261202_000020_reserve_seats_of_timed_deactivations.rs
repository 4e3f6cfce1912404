use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// R-ORG-4 as revised: a deactivation with an end time keeps its licence (and
/// any administrator seat) reserved for the return, so the worker's timed
/// reactivation can never exceed a limit. The counter now counts those users
/// too. Existing timed deactivations are counted as they are, even where that
/// puts an organisation above its licence count: they were promised their
/// return before the rule changed; no new user fits until the count is back
/// under the limit.
const UP: &[&str] = &["UPDATE organisations SET licences_used = (SELECT COUNT(*) FROM users \
     WHERE users.organisation_id = organisations.id AND (users.state IN ('PENDING_ACTIVATION', 'ACTIVE') \
     OR (users.state = 'DEACTIVATED' AND users.deactivated_until IS NOT NULL)))"];

/// The counter as migration 14 defined it.
const DOWN: &[&str] = &["UPDATE organisations SET licences_used = (SELECT COUNT(*) FROM users \
     WHERE users.organisation_id = organisations.id AND users.state IN ('PENDING_ACTIVATION', 'ACTIVE'))"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, DOWN).await
    }
}
