use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-3: a right (named by the service that checks it) given to a
        // user on the organisation or a unit's subtree, with the actions it
        // allows, which of them the grantee may pass on, and whether they may
        // let others pass them on. `parent_id` is the grant it was made on
        // the strength of (none: made by an administrator); revoking a grant
        // revokes every grant below it (REVOKE … CASCADE).
        manager
            .create_table(
                Table::create()
                    .table(Grants::Table)
                    .col(uuid(Grants::Id).primary_key())
                    .col(uuid(Grants::OrganisationId))
                    .col(uuid(Grants::GranteeId))
                    .col(string(Grants::RightName))
                    .col(uuid_null(Grants::UnitId))
                    .col(boolean(Grants::CanRead))
                    .col(boolean(Grants::CanEdit))
                    .col(boolean(Grants::PassesRead))
                    .col(boolean(Grants::PassesEdit))
                    .col(boolean(Grants::MayAuthorise))
                    .col(uuid_null(Grants::ParentId))
                    .col(uuid_null(Grants::GranterId))
                    .col(string(Grants::GrantedBy))
                    .col(big_integer(Grants::GrantedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("grants_grantee")
                            .from(Grants::Table, Grants::GranteeId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("grants_unit")
                            .from(Grants::Table, Grants::UnitId)
                            .to(Units::Table, Units::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("grants_by_grantee", vec![Grants::GranteeId, Grants::RightName]),
            ("grants_by_parent", vec![Grants::ParentId]),
            ("grants_by_organisation", vec![Grants::OrganisationId, Grants::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Grants::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Grants::Table).to_owned()).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Grants {
    Table,
    Id,
    OrganisationId,
    GranteeId,
    RightName,
    UnitId,
    CanRead,
    CanEdit,
    PassesRead,
    PassesEdit,
    MayAuthorise,
    ParentId,
    GranterId,
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
