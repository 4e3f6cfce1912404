use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-2: admin levels 1-4, each held on the whole organisation
        // (no unit) or on one unit and its subtree. One level per person and
        // scope: `scope_key` is the unit id or "" for the organisation, so the
        // unique index works alike on both backends (NULLs are distinct in
        // unique indexes). No existing data to migrate: the roles stay what
        // they were, and a level adds to them (README "Admin levels").
        manager
            .create_table(
                Table::create()
                    .table(AdminLevels::Table)
                    .col(uuid(AdminLevels::Id).primary_key())
                    .col(uuid(AdminLevels::OrganisationId))
                    .col(uuid(AdminLevels::UserId))
                    .col(small_integer(AdminLevels::Level))
                    .col(uuid_null(AdminLevels::UnitId))
                    .col(string(AdminLevels::ScopeKey))
                    .col(string(AdminLevels::GrantedBy))
                    .col(big_integer(AdminLevels::GrantedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("admin_levels_user")
                            .from(AdminLevels::Table, AdminLevels::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("admin_levels_unit")
                            .from(AdminLevels::Table, AdminLevels::UnitId)
                            .to(Units::Table, Units::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("admin_levels_one_per_scope")
                    .table(AdminLevels::Table)
                    .col(AdminLevels::UserId)
                    .col(AdminLevels::ScopeKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("admin_levels_by_organisation")
                    .table(AdminLevels::Table)
                    .col(AdminLevels::OrganisationId)
                    .col(AdminLevels::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AdminLevels::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AdminLevels {
    Table,
    Id,
    OrganisationId,
    UserId,
    Level,
    UnitId,
    ScopeKey,
    GrantedBy,
    GrantedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Id,
}
