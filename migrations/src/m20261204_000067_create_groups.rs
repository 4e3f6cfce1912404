use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-7: user groups. CUSTOM groups are made by organisation
        // administrators, their members added by hand (users of other
        // organisations too); a SYSTEM group stands for one production unit
        // (`unit_id`, and its id is the unit's), its members are whoever is
        // placed in that unit's subtree: no member rows.
        manager
            .create_table(
                Table::create()
                    .table(Groups::Table)
                    .col(uuid(Groups::Id).primary_key())
                    .col(uuid(Groups::OrganisationId))
                    .col(string(Groups::Kind))
                    .col(string(Groups::Name))
                    .col(string(Groups::Description).default(""))
                    .col(uuid_null(Groups::UnitId))
                    .col(string(Groups::CreatedBy))
                    .col(big_integer(Groups::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("groups_unit")
                            .from(Groups::Table, Groups::UnitId)
                            .to(Units::Table, Units::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("groups_by_organisation")
                    .table(Groups::Table)
                    .col(Groups::OrganisationId)
                    .col(Groups::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(GroupMembers::Table)
                    .col(uuid(GroupMembers::GroupId))
                    .col(uuid(GroupMembers::UserId))
                    .col(uuid_null(GroupMembers::AdderId))
                    .col(string(GroupMembers::AddedBy))
                    .col(big_integer(GroupMembers::AddedAt))
                    .primary_key(Index::create().col(GroupMembers::GroupId).col(GroupMembers::UserId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("group_members_group")
                            .from(GroupMembers::Table, GroupMembers::GroupId)
                            .to(Groups::Table, Groups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("group_members_user")
                            .from(GroupMembers::Table, GroupMembers::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("group_members_by_user")
                    .table(GroupMembers::Table)
                    .col(GroupMembers::UserId)
                    .to_owned(),
            )
            .await?;
        // The production units that exist get their system groups, with the
        // unit's id and name (what creating a production unit does from now).
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO groups (id, organisation_id, kind, name, description, unit_id, created_by, created_at) \
                 SELECT id, organisation_id, 'SYSTEM', name, '', id, 'system', created_at \
                 FROM units WHERE kind = 'PRODUCTION_UNIT'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(GroupMembers::Table).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(Groups::Table).to_owned()).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Groups {
    Table,
    Id,
    OrganisationId,
    Kind,
    Name,
    Description,
    UnitId,
    CreatedBy,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum GroupMembers {
    Table,
    GroupId,
    UserId,
    AdderId,
    AddedBy,
    AddedAt,
}

#[derive(DeriveIden)]
enum Units {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
