use std::collections::HashMap;

use sea_orm::{ConnectionTrait, Statement, Value};
use sea_orm_migration::prelude::*;
use uuid::Uuid;

/// R-ORG-3: a person's identification means lie within their
/// organisation's allowed ones. Before that rule (up to commit 61c2010)
/// any means could be given, and a new organisation allows MITID only, so
/// people hold means their organisation does not list. Each organisation
/// now allows what its people hold as well: nobody loses a means by the
/// upgrade, and an edit that repeats a person's means is no refusal. An
/// organisation administrator narrows the list when that was not meant
/// (which then takes the means from the people holding them, in history).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let widened = allow_the_means_people_hold(manager.get_connection()).await?;
        if widened > 0 {
            tracing::warn!(
                organisations = widened,
                "organisations now allow the identification means their people held beyond the allowed ones; their administrators may narrow them"
            );
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // A widened setting is kept: narrowing it would take means from people.
        Ok(())
    }
}

/// The names of a stored list (`["MITID","PASSWORD"]`, serde_json's
/// form of a list of names, as the domain writes it).
fn names(list: &str) -> Result<Vec<String>, DbErr> {
    serde_json::from_str(list).map_err(|e| DbErr::Custom(format!("a stored list of means is not JSON: {e}")))
}

/// Adds to each organisation's allowed means those its live people hold;
/// returns how many organisations changed. Compared in Rust: the ids are
/// text on PostgreSQL and blobs on SQLite.
pub async fn allow_the_means_people_hold(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let held = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT DISTINCT organisation_id, identification_means FROM users \
             WHERE state <> 'DELETED' AND identification_means <> '[]'",
        ))
        .await?;
    let mut held_by_organisation: HashMap<Uuid, Vec<String>> = HashMap::new();
    for row in held {
        let organisation_id: Uuid = row.try_get("", "organisation_id")?;
        let means: String = row.try_get("", "identification_means")?;
        let entry = held_by_organisation.entry(organisation_id).or_default();
        for name in names(&means)? {
            if !entry.contains(&name) {
                entry.push(name);
            }
        }
    }
    let mut widened = 0;
    for (organisation_id, held) in held_by_organisation {
        let Some(row) = db
            .query_one(
                &Query::select()
                    .column(Organisations::AllowedIdentificationMeans)
                    .from(Organisations::Table)
                    .and_where(Expr::col(Organisations::Id).eq(organisation_id))
                    .to_owned(),
            )
            .await?
        else {
            continue;
        };
        let allowed_text: String = row.try_get("", "allowed_identification_means")?;
        let mut allowed = names(&allowed_text)?;
        let before = allowed.len();
        for name in held {
            if !allowed.contains(&name) {
                allowed.push(name);
            }
        }
        if allowed.len() == before {
            continue;
        }
        let update = Query::update()
            .table(Organisations::Table)
            .value(
                Organisations::AllowedIdentificationMeans,
                Value::from(serde_json::Value::from(allowed).to_string()),
            )
            .and_where(Expr::col(Organisations::Id).eq(organisation_id))
            .to_owned();
        widened += db.execute(&update).await?.rows_affected();
    }
    Ok(widened)
}

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
    AllowedIdentificationMeans,
}
