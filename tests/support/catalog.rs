//! Every value of a test database, tables and columns taken from its catalog
//! (`sqlite_master` and `pragma_table_info` on SQLite,
//! `information_schema.columns` on PostgreSQL), so a table or column added
//! later is read without anyone listing it here. Values come back as bytes:
//! text as UTF-8, numbers as their decimal text, binary columns as they are
//! (so a number hidden in a blob is found, and not hidden by a hex encoding).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement};

/// One table: its columns (in declaration order) and every row's values.
#[derive(Debug, Clone)]
pub struct TableDump {
    pub name: String,
    pub columns: Vec<String>,
    /// `None` is SQL `NULL`.
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

/// Per table: (row count, a hash of every row's every value, order-free).
pub type Fingerprint = BTreeMap<String, (usize, u64)>;

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// (table, column, column type) of every base table, in a stable order.
async fn catalog(db: &DatabaseConnection) -> Vec<(String, String, String)> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Sqlite => {
            "SELECT m.name, p.name, LOWER(p.type) FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY m.name, p.cid"
        }
        DatabaseBackend::Postgres => {
            "SELECT CAST(c.table_name AS TEXT), CAST(c.column_name AS TEXT), CAST(c.data_type AS TEXT) \
             FROM information_schema.columns c JOIN information_schema.tables t \
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
             ORDER BY c.table_name, c.ordinal_position"
        }
        other => panic!("no catalog query for {other:?}"),
    };
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql.to_owned()))
        .await
        .expect("catalog query");
    let columns: Vec<(String, String, String)> = rows
        .into_iter()
        .map(|row| {
            (
                row.try_get_by_index(0).expect("table name"),
                row.try_get_by_index(1).expect("column name"),
                row.try_get_by_index(2).expect("column type"),
            )
        })
        .collect();
    assert!(
        columns.iter().any(|(table, ..)| table == "users"),
        "the catalog lists no users table: {columns:?}"
    );
    columns
}

/// Every row of every table of `db`.
pub async fn dump_database(db: &DatabaseConnection) -> Vec<TableDump> {
    let backend = db.get_database_backend();
    let mut tables: Vec<TableDump> = Vec::new();
    let mut types: Vec<Vec<String>> = Vec::new();
    for (table, column, ty) in catalog(db).await {
        if tables.last().is_none_or(|t| t.name != table) {
            tables.push(TableDump {
                name: table,
                columns: Vec::new(),
                rows: Vec::new(),
            });
            types.push(Vec::new());
        }
        tables.last_mut().unwrap().columns.push(column);
        types.last_mut().unwrap().push(ty);
    }
    for (table, types) in tables.iter_mut().zip(types) {
        let values: Vec<String> = table
            .columns
            .iter()
            .zip(&types)
            .map(|(column, ty)| {
                let column = quote_ident(column);
                match backend {
                    // CAST(… AS BLOB): text as its bytes, numbers as their text.
                    DatabaseBackend::Sqlite => format!("CAST({column} AS BLOB)"),
                    _ if ty == "bytea" => column,
                    _ => format!("convert_to(CAST({column} AS TEXT), 'UTF8')"),
                }
            })
            .collect();
        let sql = format!("SELECT {} FROM {}", values.join(", "), quote_ident(&table.name));
        let rows = db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap_or_else(|e| panic!("reading table {}: {e}", table.name));
        table.rows = rows
            .into_iter()
            .map(|row| {
                (0..table.columns.len())
                    .map(|i| {
                        row.try_get_by_index::<Option<Vec<u8>>>(i)
                            .unwrap_or_else(|e| panic!("{}.{}: {e}", table.name, table.columns[i]))
                    })
                    .collect()
            })
            .collect();
    }
    tables
}

/// A fingerprint of every value of every table: equal before and after a
/// call means the call changed nothing.
pub fn fingerprint_of(tables: &[TableDump]) -> Fingerprint {
    tables
        .iter()
        .map(|table| {
            // Presenting a session notes its use (at most once a minute, for
            // idle expiry): the bookkeeping of any authenticated call, denied
            // or not, and no change the call made.
            let noted_use = (table.name == "api_tokens")
                .then(|| table.columns.iter().position(|c| c == "last_used_at"))
                .flatten();
            let blanked: Vec<Vec<Option<Vec<u8>>>>;
            let table_rows = match noted_use {
                Some(i) => {
                    blanked = table
                        .rows
                        .iter()
                        .map(|row| {
                            let mut row = row.clone();
                            row[i] = None;
                            row
                        })
                        .collect();
                    &blanked
                }
                None => &table.rows,
            };
            let mut rows: Vec<&Vec<Option<Vec<u8>>>> = table_rows.iter().collect();
            rows.sort();
            // DefaultHasher::new() has fixed keys: equal content, equal hash,
            // within this process (which is all the comparison needs).
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            table.columns.hash(&mut hasher);
            rows.hash(&mut hasher);
            (table.name.clone(), (rows.len(), hasher.finish()))
        })
        .collect()
}
