//! Every value of a test database, tables and columns taken from its catalog
//! (`sqlite_master` and `pragma_table_info` on SQLite,
//! `pg_class` and `pg_attribute` on PostgreSQL), so a table or column added
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
            // pg_catalog, not information_schema: the same facts, read
            // before every fingerprint, in a millisecond instead of tens.
            "SELECT CAST(c.relname AS TEXT), CAST(a.attname AS TEXT), format_type(a.atttypid, a.atttypmod) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY c.relname, a.attnum"
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

/// The tables of a catalog, each with its columns and their types.
fn tables_of(catalog: &[(String, String, String)]) -> Vec<(String, Vec<(String, String)>)> {
    let mut tables: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (table, column, ty) in catalog {
        if tables.last().is_none_or(|(name, _)| name != table) {
            tables.push((table.clone(), Vec::new()));
        }
        tables.last_mut().unwrap().1.push((column.clone(), ty.clone()));
    }
    tables
}

/// Presenting a session notes its use (at most once a minute, for idle
/// expiry): the bookkeeping of any authenticated call, denied or not, and
/// no change the call made. Fingerprints leave it out.
fn is_noted_use(table: &str, column: &str) -> bool {
    table == "api_tokens" && column == "last_used_at"
}

/// The fingerprint of `db` (see [`fingerprint_of`]). On
/// PostgreSQL one statement hashes every table on the server (a round trip
/// per table, and every value shipped, were most of the rights matrix's
/// time); SQLite is in-process and reads the rows.
pub async fn fingerprint_database(db: &DatabaseConnection) -> Fingerprint {
    let backend = db.get_database_backend();
    let catalog = catalog(db).await;
    if backend != DatabaseBackend::Postgres {
        return fingerprint_of(&dump_with(db, &catalog).await);
    }
    let tables = tables_of(&catalog);
    let parts: Vec<String> = tables
        .iter()
        .map(|(table, columns)| {
            let kept: Vec<String> = columns
                .iter()
                .filter(|(column, _)| !is_noted_use(table, column))
                .map(|(column, _)| quote_ident(column))
                .collect();
            // A row as PostgreSQL writes a record: values quoted where they
            // hold a separator, NULL empty and '' as "", so rows are
            // told apart; sorted, so the order rows come in does not count.
            format!(
                "SELECT CAST('{table}' AS TEXT), COUNT(*), md5(COALESCE(string_agg(r, E'\\n' ORDER BY r), '')) \
                 FROM (SELECT CAST(ROW({}) AS TEXT) AS r FROM {}) AS x",
                kept.join(", "),
                quote_ident(table)
            )
        })
        .collect();
    let rows = db
        .query_all_raw(Statement::from_string(backend, parts.join(" UNION ALL ")))
        .await
        .expect("fingerprint statement");
    let columns_of: BTreeMap<&str, &Vec<(String, String)>> = tables.iter().map(|(t, c)| (t.as_str(), c)).collect();
    rows.into_iter()
        .map(|row| {
            let table: String = row.try_get_by_index(0).expect("table");
            let count: i64 = row.try_get_by_index(1).expect("count");
            let digest: String = row.try_get_by_index(2).expect("digest");
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            columns_of[table.as_str()].hash(&mut hasher);
            digest.hash(&mut hasher);
            (table, (count as usize, hasher.finish()))
        })
        .collect()
}

/// Every row of every table of `db`.
pub async fn dump_database(db: &DatabaseConnection) -> Vec<TableDump> {
    dump_with(db, &catalog(db).await).await
}

async fn dump_with(db: &DatabaseConnection, catalog: &[(String, String, String)]) -> Vec<TableDump> {
    let backend = db.get_database_backend();
    let mut tables: Vec<TableDump> = Vec::new();
    let mut types: Vec<Vec<String>> = Vec::new();
    for (table, column, ty) in catalog.iter().cloned() {
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
            let noted_use = table.columns.iter().position(|c| is_noted_use(&table.name, c));
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
