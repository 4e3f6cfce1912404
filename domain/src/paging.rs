//! Opaque keyset page tokens: the id of the last item of the previous page,
//! tagged with what was listed so a token cannot be replayed on another list.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::DomainError;

pub fn encode(list: &str, last_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}|{last_id}"))
}

/// `None` for an empty token (the first page).
pub fn decode(list: &str, token: &str) -> Result<Option<Uuid>, DomainError> {
    decode_key(list, token, |id| Uuid::parse_str(id).ok())
}

/// A token for lists ordered by something other than an id: `key` is the
/// last item's sort key, opaque to the client.
pub fn encode_key(list: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}|{key}"))
}

/// The sort key of a token of `list`, read by `parse`; `None` for an empty
/// token (the first page).
pub fn decode_key<T>(list: &str, token: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, DomainError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || DomainError::invalid("page_token", "is not a page token this list returned");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (tag, key) = text.split_once('|').ok_or_else(invalid)?;
    // No key a list hands out holds a NUL (no stored text does), and
    // PostgreSQL refuses one in a comparison: a forged one would be INTERNAL.
    if tag != list || key.contains('\0') {
        return Err(invalid());
    }
    parse(key).map(Some).ok_or_else(invalid)
}

/// 0 means `default`; more than `max` is an error, not silently clamped.
pub fn page_size(requested: i32, default: u64, max: u64) -> Result<u64, DomainError> {
    match requested {
        0 => Ok(default),
        n if n < 0 => Err(DomainError::invalid("page_size", "must not be negative")),
        n if n as u64 > max => Err(DomainError::invalid("page_size", format!("must be at most {max}"))),
        n => Ok(n as u64),
    }
}

/// Which way a keyset list runs over its ids (UUIDv7: creation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Ascending,
    /// Newest first.
    Descending,
}

/// `list` bound to the query its pages come from (AIP-158): a token is
/// good for the request that got it, not for the same list with other
/// filters, where it would go on from a place in another list of rows. The
/// query with its filters (and their values) is the request as the list
/// reads it, every filter included, without each list naming its own. A
/// filter that reads data (a unit's subtree, a person's groups) binds the
/// token to that data too: when it changes between two pages, the next
/// token is refused and the client starts again.
///
/// Only what selects the rows counts (the tables and the conditions), not
/// the columns read: a release that adds a column keeps the tokens of the
/// one before.
fn bound_to<E: sea_orm::EntityTrait>(list: &str, select: &sea_orm::Select<E>) -> String {
    use sea_orm::QueryTrait;
    use sha2::Digest;
    let mut query = select.as_query().clone();
    query.clear_selects();
    let query = query.to_string(sea_orm::sea_query::PostgresQueryBuilder);
    let digest = sha2::Sha256::digest(query.as_bytes());
    format!("{list}~{}", hex::encode(&digest[..8]))
}

/// The cursor of `token` for the bound list `bound` (`<list>~<hash>`), or,
/// for one release, of a token made before tokens were bound (by a pod of
/// the previous release during a rollout: `<list>` alone).
fn decode_bound<T>(bound: &str, token: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, DomainError> {
    match decode_key(bound, token, &parse) {
        Ok(cursor) => Ok(cursor),
        Err(refused) => {
            let unbound = bound.rsplit_once('~').map_or(bound, |(list, _)| list);
            decode_key(unbound, token, &parse).map_err(|_| refused)
        }
    }
}

/// One page of `select` (its filters already on) by its id column: the
/// rows after the token's id in `order`, at most `limit`, and the token of
/// the next page when there are more. The one keyset query of every list.
#[allow(clippy::too_many_arguments)]
pub async fn keyset<E: sea_orm::EntityTrait>(
    db: &impl sea_orm::ConnectionTrait,
    select: sea_orm::Select<E>,
    id: E::Column,
    order: Order,
    list: &str,
    token: &str,
    limit: u64,
    id_of: impl Fn(&E::Model) -> Uuid,
) -> Result<(Vec<E::Model>, Option<String>), DomainError> {
    let list = bound_to(list, &select);
    keyset_of_bound(db, select, id, order, &list, token, limit, id_of).await
}

/// [`keyset`] for a `list` already bound to its request.
#[allow(clippy::too_many_arguments)]
async fn keyset_of_bound<E: sea_orm::EntityTrait>(
    db: &impl sea_orm::ConnectionTrait,
    select: sea_orm::Select<E>,
    id: E::Column,
    order: Order,
    list: &str,
    token: &str,
    limit: u64,
    id_of: impl Fn(&E::Model) -> Uuid,
) -> Result<(Vec<E::Model>, Option<String>), DomainError> {
    let cursor = decode_bound(list, token, |id| Uuid::parse_str(id).ok())?;
    let rows = page_window(select, id, order, cursor, limit).all(db).await?;
    Ok(page_of(rows, limit, |last| encode(list, id_of(last))))
}

/// The same page as [`keyset`], found in two steps: the page's ids first,
/// by a query that reads only `id` and the filtered columns, then those
/// rows whole. When an index holds every column the filters read, the
/// first step is an index-only scan: a filter that passes over many rows
/// before the page fills (a common word that the newest rows lack) reads
/// index entries, not the table's wide rows (certificates carry their DER).
#[allow(clippy::too_many_arguments)]
pub async fn keyset_ids_first<E: sea_orm::EntityTrait>(
    db: &impl sea_orm::ConnectionTrait,
    select: sea_orm::Select<E>,
    id: E::Column,
    order: Order,
    list: &str,
    token: &str,
    limit: u64,
    id_of: impl Fn(&E::Model) -> Uuid,
) -> Result<(Vec<E::Model>, Option<String>), DomainError> {
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect, QueryTrait};
    let list = bound_to(list, &select);
    let cursor = decode_bound(&list, token, |id| Uuid::parse_str(id).ok())?;
    let ids = page_window(select.select_only().column(id), id, order, cursor, limit).into_query();
    // The outer query repeats the window: harmless on the page's own ids.
    keyset_of_bound(
        db,
        E::find().filter(id.in_subquery(ids)),
        id,
        order,
        &list,
        token,
        limit,
        id_of,
    )
    .await
}

/// `select` in `order` by `id`, after `cursor`, `limit + 1` rows (the one
/// more says whether a next page exists).
fn page_window<E: sea_orm::EntityTrait>(
    select: sea_orm::Select<E>,
    id: E::Column,
    order: Order,
    cursor: Option<Uuid>,
    limit: u64,
) -> sea_orm::Select<E> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let mut select = match order {
        Order::Ascending => select.order_by_asc(id),
        Order::Descending => select.order_by_desc(id),
    };
    if let Some(cursor) = cursor {
        select = select.filter(match order {
            Order::Ascending => id.gt(cursor),
            Order::Descending => id.lt(cursor),
        });
    }
    select.limit(limit + 1)
}

/// `rows` (read with `limit + 1`) cut to `limit`, and the next page's token
/// (made from the last row kept) when there was one more.
fn page_of<M>(mut rows: Vec<M>, limit: u64, token_after: impl FnOnce(&M) -> String) -> (Vec<M>, Option<String>) {
    let next = (rows.len() as u64 > limit).then(|| {
        rows.truncate(limit as usize);
        token_after(&rows[rows.len() - 1])
    });
    (rows, next)
}

/// One page of `select` (its filters already on) ordered by a time column,
/// then by id, both ascending: for a list whose useful order is not creation
/// (certificates by expiry). The token holds the last row's time and id, so
/// the next page starts right after it even when many rows share one time.
/// `time >= t` is repeated beside the keyset so an index on (…, time, id)
/// starts its range there; only rows sharing `t` are filtered by id.
#[allow(clippy::too_many_arguments)]
pub async fn keyset_by_time<E: sea_orm::EntityTrait>(
    db: &impl sea_orm::ConnectionTrait,
    select: sea_orm::Select<E>,
    time: E::Column,
    id: E::Column,
    list: &str,
    token: &str,
    limit: u64,
    key_of: impl Fn(&E::Model) -> (i64, Uuid),
) -> Result<(Vec<E::Model>, Option<String>), DomainError> {
    use sea_orm::{ColumnTrait, Condition, QueryFilter, QueryOrder, QuerySelect};
    let list = &bound_to(list, &select);
    let cursor = decode_bound(list, token, |key| {
        let (at, last) = key.split_once('/')?;
        Some((at.parse::<i64>().ok()?, Uuid::parse_str(last).ok()?))
    })?;
    let mut select = select.order_by_asc(time).order_by_asc(id);
    if let Some((at, last)) = cursor {
        select = select.filter(time.gte(at)).filter(
            Condition::any()
                .add(time.gt(at))
                .add(Condition::all().add(time.eq(at)).add(id.gt(last))),
        );
    }
    let rows = select.limit(limit + 1).all(db).await?;
    Ok(page_of(rows, limit, |row| {
        let (at, last) = key_of(row);
        encode_key(list, &format!("{at}/{last}"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token forged with a NUL in its text key (ListImportErrors' column
    /// name) is refused as a page token, before any query.
    /// A token of the same list bound to other filters is refused; one made
    /// before tokens were bound (a pod of the previous release, during a
    /// rollout) goes on, for one release.
    #[test]
    fn a_bound_list_takes_its_own_tokens_and_unbound_ones() {
        let id = Uuid::now_v7();
        let parse = |key: &str| Uuid::parse_str(key).ok();
        let own = encode("users:x~00aa", id);
        assert_eq!(decode_bound("users:x~00aa", &own, parse).unwrap(), Some(id));
        let other_filters = encode("users:x~11bb", id);
        assert!(decode_bound("users:x~00aa", &other_filters, parse).is_err());
        let before_binding = encode("users:x", id);
        assert_eq!(decode_bound("users:x~00aa", &before_binding, parse).unwrap(), Some(id));
        let other_list = encode("groups:x", id);
        assert!(decode_bound("users:x~00aa", &other_list, parse).is_err());
    }

    #[test]
    fn a_key_with_a_nul_is_no_page_token() {
        let forged = URL_SAFE_NO_PAD.encode("import-errors:x|2:\0");
        let parsed = decode_key("import-errors:x", &forged, |key| Some(key.to_owned()));
        assert!(
            matches!(&parsed, Err(DomainError::InvalidArgument(v)) if v[0].field == "page_token"),
            "{parsed:?}"
        );
        let honest = URL_SAFE_NO_PAD.encode("import-errors:x|2:email");
        assert_eq!(
            decode_key("import-errors:x", &honest, |key| Some(key.to_owned()))
                .unwrap()
                .as_deref(),
            Some("2:email")
        );
    }
}
