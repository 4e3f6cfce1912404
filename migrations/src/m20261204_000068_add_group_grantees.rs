use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The SQLite table as it stands after this migration: SQLite cannot drop a
/// NOT NULL, so the table is built anew and the rows copied over.
const SQLITE_REBUILD: &[&str] = &[
    r#"CREATE TABLE "grants_new" (
        "id" uuid_text NOT NULL PRIMARY KEY,
        "organisation_id" uuid_text NOT NULL,
        "grantee_id" uuid_text NULL,
        "right_name" varchar NOT NULL,
        "unit_id" uuid_text NULL,
        "can_read" boolean NOT NULL,
        "can_edit" boolean NOT NULL,
        "passes_read" boolean NOT NULL,
        "passes_edit" boolean NOT NULL,
        "may_authorise" boolean NOT NULL,
        "parent_id" uuid_text NULL,
        "granter_id" uuid_text NULL,
        "granted_by" varchar NOT NULL,
        "granted_at" integer NOT NULL,
        "grantee_group_id" uuid_text NULL,
        FOREIGN KEY ("grantee_id") REFERENCES "users" ("id") ON DELETE CASCADE,
        FOREIGN KEY ("unit_id") REFERENCES "units" ("id"),
        FOREIGN KEY ("grantee_group_id") REFERENCES "groups" ("id"),
        CONSTRAINT "grants_one_grantee" CHECK (("grantee_id" IS NULL) <> ("grantee_group_id" IS NULL))
    )"#,
    r#"INSERT INTO "grants_new" ("id", "organisation_id", "grantee_id", "right_name", "unit_id", "can_read",
        "can_edit", "passes_read", "passes_edit", "may_authorise", "parent_id", "granter_id", "granted_by", "granted_at")
       SELECT "id", "organisation_id", "grantee_id", "right_name", "unit_id", "can_read", "can_edit", "passes_read",
        "passes_edit", "may_authorise", "parent_id", "granter_id", "granted_by", "granted_at" FROM "grants""#,
    r#"DROP TABLE "grants""#,
    r#"ALTER TABLE "grants_new" RENAME TO "grants""#,
    r#"CREATE INDEX "grants_by_grantee" ON "grants" ("grantee_id", "right_name")"#,
    r#"CREATE INDEX "grants_by_parent" ON "grants" ("parent_id")"#,
    r#"CREATE INDEX "grants_by_organisation" ON "grants" ("organisation_id", "id")"#,
];

const POSTGRES_ALTER: &[&str] = &[
    r#"ALTER TABLE "grants" ALTER COLUMN "grantee_id" DROP NOT NULL"#,
    r#"ALTER TABLE "grants" ADD COLUMN "grantee_group_id" uuid NULL REFERENCES "groups" ("id")"#,
    r#"ALTER TABLE "grants" ADD CONSTRAINT "grants_one_grantee" CHECK (("grantee_id" IS NULL) <> ("grantee_group_id" IS NULL))"#,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // R-ACC-7: groups carry grants. A grant's grantee is a user or a
        // group, exactly one of them. No cascade from groups: deleting a
        // group revokes its grants first, each with its history and the
        // grants made on its strength.
        let statements = match manager.get_database_backend() {
            DatabaseBackend::Sqlite => SQLITE_REBUILD,
            _ => POSTGRES_ALTER,
        };
        let db = manager.get_connection();
        for statement in statements {
            db.execute_unprepared(statement).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("grants_by_group")
                    .table(Grants::Table)
                    .col(Grants::GranteeGroupId)
                    .col(Grants::RightName)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Back to users only: grants to groups go, with everything made on
        // their strength however deep (as a revocation would take it), as
        // the groups themselves go one migration further down.
        let db = manager.get_connection();
        db.execute_unprepared(
            r#"WITH RECURSIVE "gone" ("id") AS (
                   SELECT "id" FROM "grants" WHERE "grantee_group_id" IS NOT NULL
                   UNION SELECT "grants"."id" FROM "grants" JOIN "gone" ON "grants"."parent_id" = "gone"."id")
               DELETE FROM "grants" WHERE "id" IN (SELECT "id" FROM "gone")"#,
        )
        .await?;
        manager
            .drop_index(Index::drop().name("grants_by_group").table(Grants::Table).to_owned())
            .await?;
        let statements: &[&str] = match manager.get_database_backend() {
            DatabaseBackend::Sqlite => SQLITE_BACK,
            _ => POSTGRES_BACK,
        };
        for statement in statements {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}

const SQLITE_BACK: &[&str] = &[
    r#"CREATE TABLE "grants_old" (
        "id" uuid_text NOT NULL PRIMARY KEY,
        "organisation_id" uuid_text NOT NULL,
        "grantee_id" uuid_text NOT NULL,
        "right_name" varchar NOT NULL,
        "unit_id" uuid_text NULL,
        "can_read" boolean NOT NULL,
        "can_edit" boolean NOT NULL,
        "passes_read" boolean NOT NULL,
        "passes_edit" boolean NOT NULL,
        "may_authorise" boolean NOT NULL,
        "parent_id" uuid_text NULL,
        "granter_id" uuid_text NULL,
        "granted_by" varchar NOT NULL,
        "granted_at" integer NOT NULL,
        FOREIGN KEY ("grantee_id") REFERENCES "users" ("id") ON DELETE CASCADE,
        FOREIGN KEY ("unit_id") REFERENCES "units" ("id")
    )"#,
    r#"INSERT INTO "grants_old" SELECT "id", "organisation_id", "grantee_id", "right_name", "unit_id", "can_read",
        "can_edit", "passes_read", "passes_edit", "may_authorise", "parent_id", "granter_id", "granted_by", "granted_at"
       FROM "grants""#,
    r#"DROP TABLE "grants""#,
    r#"ALTER TABLE "grants_old" RENAME TO "grants""#,
    r#"CREATE INDEX "grants_by_grantee" ON "grants" ("grantee_id", "right_name")"#,
    r#"CREATE INDEX "grants_by_parent" ON "grants" ("parent_id")"#,
    r#"CREATE INDEX "grants_by_organisation" ON "grants" ("organisation_id", "id")"#,
];

const POSTGRES_BACK: &[&str] = &[
    r#"ALTER TABLE "grants" DROP CONSTRAINT "grants_one_grantee""#,
    r#"ALTER TABLE "grants" DROP COLUMN "grantee_group_id""#,
    r#"ALTER TABLE "grants" ALTER COLUMN "grantee_id" SET NOT NULL"#,
];

#[derive(DeriveIden)]
enum Grants {
    Table,
    GranteeGroupId,
    RightName,
}
