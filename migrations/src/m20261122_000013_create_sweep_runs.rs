use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per sweep and period: the replica whose insert succeeds runs
        // that period's sweep; the others see the key taken and skip it.
        manager
            .create_table(
                Table::create()
                    .table(SweepRuns::Table)
                    .col(string(SweepRuns::Name))
                    .col(big_integer(SweepRuns::PeriodStart))
                    .col(string(SweepRuns::ClaimedBy))
                    .col(big_integer(SweepRuns::ClaimedAt))
                    .primary_key(Index::create().col(SweepRuns::Name).col(SweepRuns::PeriodStart))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SweepRuns::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SweepRuns {
    Table,
    Name,
    PeriodStart,
    ClaimedBy,
    ClaimedAt,
}
