//! The purchase side of Redis: reserve and release (Lua, one round trip
//! each), reservation lookups, counters, and the per-user orders cache.

use std::collections::HashMap;

use uuid::{Uuid, fmt::Hyphenated};

use super::{Counter, RedisStore, SaleKeys, script_command};
use crate::{
    domain::{FailureReason, Quantity, ReservationStatus, SaleState},
    store::{Dependency, StoreError},
};

/// One purchase attempt, validated by the caller.
#[derive(Debug, Clone)]
pub struct ReserveRequest<'a> {
    pub sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: Quantity,
    pub idempotency_key: &'a str,
    /// Used only if the attempt is accepted.
    pub reservation_id: Uuid,
    /// The per-user attempt rate the whole cluster enforces.
    pub rate: UserRate,
}

/// Attempts one user may make: `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRate {
    pub per_second: u32,
    pub burst: u32,
}

impl UserRate {
    fn interval_micros(self) -> u64 {
        1_000_000 / u64::from(self.per_second.max(1))
    }
}

/// What `reserve.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Accepted {
        reservation_id: Uuid,
        remaining: i64,
        reserved_at_ms: i64,
    },
    /// The key was used before with the same quantity: the first reservation.
    Replayed {
        reservation_id: Uuid,
        status: ReservationStatus,
    },
    KeyReused,
    NotArmed,
    /// The user's attempts came faster than the cluster-wide rate.
    RateLimited {
        wait_ms: u64,
    },
    NotActive {
        state: SaleState,
    },
    AboveLimit {
        limit: i64,
    },
    LimitReached {
        held: i64,
        limit: i64,
    },
    SoldOut {
        remaining: i64,
    },
}

/// A reservation as Redis records it (`scripts/record.lua` is the Lua
/// side of the same format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRecord {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: Quantity,
    pub status: ReservationStatus,
    pub reserved_at_ms: i64,
    pub idempotency_key: String,
    pub reason: Option<FailureReason>,
    /// The order of a confirmed reservation, once the worker wrote it (a
    /// status read then needs no PostgreSQL).
    pub order_id: Option<Uuid>,
}

impl ReservationRecord {
    /// `user|quantity|status|reserved_ms|idempotency_key|reason_code`, then
    /// `|order_id` when the order is known (a six-field record is what
    /// builds before the order id wrote, and still read).
    pub fn encode(&self) -> String {
        let mut record = format!(
            "{}|{}|{}|{}|{}|{}",
            self.user_id,
            self.quantity,
            self.status.as_str(),
            self.reserved_at_ms,
            self.idempotency_key,
            self.reason.map(FailureReason::code).unwrap_or_default(),
        );
        if let Some(order_id) = self.order_id {
            record.push('|');
            record.push_str(&order_id.to_string());
        }
        record
    }
}

/// A sale as the per-node snapshot reads it from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaleLiveState {
    pub remaining: Option<i64>,
    pub state: Option<SaleState>,
}

/// Counters and gauges of one sale in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaleCounters {
    pub counters: HashMap<String, i64>,
    pub pending: i64,
    pub remaining: Option<i64>,
    /// When the oldest pending reservation was made (Unix ms): the drain lag.
    pub oldest_pending_ms: Option<i64>,
}

impl SaleCounters {
    /// The counter's value; 0 when it was never written.
    pub fn get(&self, counter: Counter) -> i64 {
        self.recorded(counter).unwrap_or_default()
    }

    /// The counter's value, or `None` when it was never written.
    pub fn recorded(&self, counter: Counter) -> Option<i64> {
        self.counters.get(counter.name()).copied()
    }
}

pub(super) fn malformed(what: &str, reply: &[String]) -> StoreError {
    StoreError::unexpected(
        Dependency::Redis,
        format!("malformed {what} reply: {reply:?}"),
    )
}

pub(super) fn field<T: std::str::FromStr>(
    reply: &[String],
    index: usize,
    what: &str,
) -> Result<T, StoreError> {
    reply
        .get(index)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| malformed(what, reply))
}

fn parse_reserve(reply: &[String]) -> Result<ReserveOutcome, StoreError> {
    let what = "reserve";
    let status = |index| {
        reply
            .get(index)
            .and_then(|value: &String| ReservationStatus::parse(value))
            .ok_or_else(|| malformed(what, reply))
    };
    Ok(match reply.first().map(String::as_str) {
        Some("ACCEPTED") => ReserveOutcome::Accepted {
            reservation_id: field(reply, 1, what)?,
            remaining: field(reply, 2, what)?,
            reserved_at_ms: field(reply, 3, what)?,
        },
        Some("REPLAYED") => ReserveOutcome::Replayed {
            reservation_id: field(reply, 1, what)?,
            status: status(2)?,
        },
        Some("KEY_REUSED") => ReserveOutcome::KeyReused,
        Some("NOT_ARMED") => ReserveOutcome::NotArmed,
        Some("RATE_LIMITED") => ReserveOutcome::RateLimited {
            wait_ms: field(reply, 1, what)?,
        },
        Some("NOT_ACTIVE") => ReserveOutcome::NotActive {
            state: reply
                .get(1)
                .and_then(|state| SaleState::parse(state))
                .ok_or_else(|| malformed(what, reply))?,
        },
        Some("ABOVE_LIMIT") => ReserveOutcome::AboveLimit {
            limit: field(reply, 1, what)?,
        },
        Some("LIMIT") => ReserveOutcome::LimitReached {
            held: field(reply, 1, what)?,
            limit: field(reply, 2, what)?,
        },
        Some("SOLD_OUT") => ReserveOutcome::SoldOut {
            remaining: field(reply, 1, what)?,
        },
        _ => return Err(malformed(what, reply)),
    })
}

/// The reservation a shopper's latest field ([`SaleKeys::latest_field`],
/// `encode_latest` in `record.lua`) names, if any: the text before its `|`
/// (the whole value, as an older build wrote it). A value with a second
/// `|` does not read, as in `decode_latest`.
fn parse_latest(value: &str) -> Option<Uuid> {
    let reservation = match value.split_once('|') {
        Some((_, due)) if due.contains('|') => return None,
        Some((reservation, _)) => reservation,
        None => value,
    };
    reservation.parse().ok()
}

/// Parses what [`ReservationRecord::encode`] (or `record.lua`) wrote. A
/// reason code this build does not know reads as no reason.
pub fn parse_record(
    sale_id: Uuid,
    reservation_id: Uuid,
    record: &str,
) -> Result<ReservationRecord, StoreError> {
    // Records without an order id have six fields.
    let mut parts: Vec<&str> = record.splitn(7, '|').collect();
    if parts.len() == 6 {
        parts.push("");
    }
    let bad = || {
        StoreError::unexpected(
            Dependency::Redis,
            format!("malformed reservation {reservation_id}: {record:?}"),
        )
    };
    let [user, quantity, status, reserved_ms, key, reason, order] = parts[..] else {
        return Err(bad());
    };
    // An unreadable order id reads as unknown: the order is then read
    // from PostgreSQL instead of failing the whole record.
    let order_id = match order {
        "" => None,
        order => order.parse().ok().or_else(|| {
            tracing::warn!(%reservation_id, order, "unreadable order id in a reservation record");
            None
        }),
    };
    Ok(ReservationRecord {
        reservation_id,
        sale_id,
        user_id: user.parse().map_err(|_| bad())?,
        quantity: quantity.parse().map_err(|_| bad())?,
        status: ReservationStatus::parse(status).ok_or_else(bad)?,
        reserved_at_ms: reserved_ms.parse().map_err(|_| bad())?,
        idempotency_key: key.to_string(),
        reason: FailureReason::from_code(reason),
        order_id,
    })
}

impl RedisStore {
    /// One field of a hash.
    pub(super) async fn hget<T: redis::FromRedisValue>(
        &self,
        key: &str,
        field: String,
    ) -> Result<Option<T>, StoreError> {
        self.query(redis::Cmd::hget(key, field)).await
    }

    /// Decides one purchase attempt atomically (`scripts/reserve.lua`).
    pub async fn reserve(
        &self,
        request: &ReserveRequest<'_>,
    ) -> Result<ReserveOutcome, StoreError> {
        let keys = self.sale_keys(request.sale_id);
        let script = &self.scripts.reserve;
        let mut command = script_command(
            script,
            &[
                &keys.meta,
                &keys.buyers,
                &keys.reservations,
                &keys.pending,
                &keys.shoppers,
                &keys.stats,
            ],
        );
        // Ids as text from buffers on the stack, not as owned strings.
        let (mut user, mut reservation) = ([0; Hyphenated::LENGTH], [0; Hyphenated::LENGTH]);
        command
            .arg(
                request
                    .user_id
                    .hyphenated()
                    .encode_lower(&mut user)
                    .as_bytes(),
            )
            .arg(request.quantity)
            .arg(request.idempotency_key)
            .arg(
                request
                    .reservation_id
                    .hyphenated()
                    .encode_lower(&mut reservation)
                    .as_bytes(),
            )
            .arg(request.rate.interval_micros())
            .arg(request.rate.burst.max(1));
        let reply: Vec<String> = self.run_script_command(script, command).await?;
        parse_reserve(&reply)
    }

    pub async fn reservation(
        &self,
        sale_id: Uuid,
        reservation_id: Uuid,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        let keys = self.sale_keys(sale_id);
        let record: Option<String> = self
            .hget(&keys.reservations, reservation_id.to_string())
            .await?;
        record
            .map(|record| parse_record(sale_id, reservation_id, &record))
            .transpose()
    }

    /// Looks a reservation up in each of `sale_ids` (one pipelined round trip).
    pub async fn find_reservation(
        &self,
        sale_ids: &[Uuid],
        reservation_id: Uuid,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        if sale_ids.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for sale_id in sale_ids {
            pipe.hget(
                &self.sale_keys(*sale_id).reservations,
                reservation_id.to_string(),
            );
        }
        let records: Vec<Option<String>> = self.query_pipe(pipe).await?;
        sale_ids
            .iter()
            .zip(records)
            .find_map(|(sale_id, record)| {
                record.map(|record| parse_record(*sale_id, reservation_id, &record))
            })
            .transpose()
    }

    /// The user's latest reservation in the sale.
    pub async fn latest_reservation(
        &self,
        sale_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        let keys = self.sale_keys(sale_id);
        let latest: Option<String> = self
            .hget(&keys.shoppers, SaleKeys::latest_field(user_id))
            .await?;
        match latest.as_deref().and_then(parse_latest) {
            Some(reservation_id) => self.reservation(sale_id, reservation_id).await,
            None => Ok(None),
        }
    }

    /// Units the user holds in the sale (pending + confirmed).
    pub async fn units_held(&self, sale_id: Uuid, user_id: Uuid) -> Result<i64, StoreError> {
        let keys = self.sale_keys(sale_id);
        let held: Option<i64> = self.hget(&keys.buyers, user_id.to_string()).await?;
        Ok(held.unwrap_or_default())
    }

    /// Remaining stock and mirrored state of each sale (one round trip).
    pub async fn live_states(&self, sale_ids: &[Uuid]) -> Result<Vec<SaleLiveState>, StoreError> {
        if sale_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for sale_id in sale_ids {
            let keys = self.sale_keys(*sale_id);
            pipe.hget(&keys.meta, "stock").hget(&keys.meta, "state");
        }
        let replies: Vec<(Option<i64>, Option<String>)> = self.query_pipe(pipe).await?;
        Ok(replies
            .into_iter()
            .map(|(remaining, state)| SaleLiveState {
                remaining,
                state: state.as_deref().and_then(SaleState::parse),
            })
            .collect())
    }

    pub async fn sale_counters(&self, sale_id: Uuid) -> Result<SaleCounters, StoreError> {
        let keys = self.sale_keys(sale_id);
        let mut pipe = redis::pipe();
        pipe.hgetall(&keys.stats)
            .zcard(&keys.pending)
            .hget(&keys.meta, "stock")
            .zrange_withscores(&keys.pending, 0, 0);
        #[allow(clippy::type_complexity)]
        let (counters, pending, remaining, oldest): (
            HashMap<String, i64>,
            i64,
            Option<i64>,
            Vec<(String, i64)>,
        ) = self.query_pipe(pipe).await?;
        Ok(SaleCounters {
            counters,
            pending,
            remaining,
            oldest_pending_ms: oldest.first().map(|(_, reserved_ms)| *reserved_ms),
        })
    }

    pub(super) fn orders_cache_key(&self, user_id: Uuid) -> String {
        format!("{}:{{user:{user_id}}}:orders", self.prefix)
    }

    /// A cached page of the user's orders (JSON) if fresh; on a miss, the
    /// mark to hand back to [`Self::cache_orders`] with the page read from
    /// PostgreSQL (`scripts/cached_orders.lua`). The whole user's cache
    /// expires `ttl_secs` after its first miss.
    pub async fn cached_orders(
        &self,
        user_id: Uuid,
        page: &str,
        ttl_secs: u64,
    ) -> Result<CachedOrders, StoreError> {
        let reading = Uuid::new_v4().simple().to_string();
        let mut invocation = self.scripts.cached_orders.prepare_invoke();
        invocation
            .key(self.orders_cache_key(user_id))
            .arg(page)
            .arg(&reading)
            .arg(ttl_secs);
        let cached: Option<String> = self.run_script(invocation).await?;
        Ok(match cached {
            Some(json) => CachedOrders::Hit(json),
            None => CachedOrders::Miss { reading },
        })
    }

    /// Caches a page read after [`Self::cached_orders`] missed with the
    /// mark `reading`, unless the user's orders changed since
    /// (`scripts/cache_orders.lua`).
    pub async fn cache_orders(
        &self,
        user_id: Uuid,
        page: &str,
        json: &str,
        reading: &str,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.cache_orders.prepare_invoke();
        invocation
            .key(self.orders_cache_key(user_id))
            .arg(reading)
            .arg(page)
            .arg(json);
        let cached: i64 = self.run_script(invocation).await?;
        Ok(cached == 1)
    }

    /// Drops the user's cached order pages (after their orders changed).
    pub async fn invalidate_orders(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.invalidate_orders_of(&[user_id]).await
    }

    /// Drops the cached order pages of several users, and with them the
    /// marks of reads in flight, with one `DEL` of every user's key, which
    /// writes nothing for a user who never read their orders. One command
    /// costs Redis a third of what a pipeline of one `DEL` per user does
    /// (BENCHMARKS.md). Each user's key has a slot of its own: redis-rs's
    /// cluster client splits a multi-key `DEL` per shard, while a pipeline
    /// must stay within one slot (DESIGN.md §8, the Redis Cluster plan).
    pub async fn invalidate_orders_of(&self, user_ids: &[Uuid]) -> Result<(), StoreError> {
        if user_ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = user_ids
            .iter()
            .map(|user_id| self.orders_cache_key(*user_id))
            .collect();
        let _deleted: i64 = self.query(redis::cmd("DEL").arg(keys).take()).await?;
        Ok(())
    }
}

/// What the orders cache holds for one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedOrders {
    Hit(String),
    /// Not cached; `reading` marks this read (see [`RedisStore::cache_orders`]).
    Miss {
        reading: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn reserve_replies_parse_into_outcomes() {
        let id = Uuid::now_v7();
        let table = [
            (
                strings(&["ACCEPTED", &id.to_string(), "9", "1700000000000"]),
                ReserveOutcome::Accepted {
                    reservation_id: id,
                    remaining: 9,
                    reserved_at_ms: 1_700_000_000_000,
                },
            ),
            (
                strings(&["REPLAYED", &id.to_string(), "confirmed"]),
                ReserveOutcome::Replayed {
                    reservation_id: id,
                    status: ReservationStatus::Confirmed,
                },
            ),
            (strings(&["KEY_REUSED"]), ReserveOutcome::KeyReused),
            (strings(&["NOT_ARMED"]), ReserveOutcome::NotArmed),
            (
                strings(&["NOT_ACTIVE", "paused"]),
                ReserveOutcome::NotActive {
                    state: SaleState::Paused,
                },
            ),
            (
                strings(&["ABOVE_LIMIT", "2"]),
                ReserveOutcome::AboveLimit { limit: 2 },
            ),
            (
                strings(&["LIMIT", "1", "1"]),
                ReserveOutcome::LimitReached { held: 1, limit: 1 },
            ),
            (
                strings(&["SOLD_OUT", "0"]),
                ReserveOutcome::SoldOut { remaining: 0 },
            ),
        ];
        for (reply, expected) in table {
            assert_eq!(parse_reserve(&reply).unwrap(), expected);
        }
        assert!(parse_reserve(&strings(&["ACCEPTED", "not-a-uuid", "1", "1"])).is_err());
        assert!(parse_reserve(&strings(&["WHAT"])).is_err());
    }

    #[test]
    fn reservation_records_round_trip_with_and_without_a_reason_or_an_order() {
        let (sale, reservation, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let pending =
            parse_record(sale, reservation, &format!("{user}|2|pending|17|k-1|")).unwrap();
        assert_eq!(
            (pending.quantity, pending.status, pending.reason),
            (Quantity::new(2).unwrap(), ReservationStatus::Pending, None)
        );
        let failed = ReservationRecord {
            status: ReservationStatus::Failed,
            reason: Some(FailureReason::SaleCancelled),
            ..pending.clone()
        };
        assert_eq!(
            failed.encode(),
            format!("{user}|2|failed|17|k-1|sale_cancelled")
        );
        let order = Uuid::now_v7();
        let confirmed = ReservationRecord {
            status: ReservationStatus::Confirmed,
            order_id: Some(order),
            ..pending.clone()
        };
        assert_eq!(
            confirmed.encode(),
            format!("{user}|2|confirmed|17|k-1||{order}")
        );
        assert_eq!(
            parse_record(sale, reservation, &confirmed.encode()).unwrap(),
            confirmed
        );
        assert_eq!(
            parse_record(sale, reservation, &failed.encode()).unwrap(),
            failed
        );
        assert_eq!(
            parse_record(sale, reservation, &pending.encode()).unwrap(),
            pending
        );
        assert!(parse_record(sale, reservation, "garbage").is_err());
    }

    #[test]
    fn a_latest_field_names_its_reservation_in_either_form() {
        let reservation = Uuid::now_v7();
        let due = "1796200000000000";
        for value in [
            format!("{reservation}|{due}"),
            format!("{reservation}|"),
            reservation.to_string(),
        ] {
            assert_eq!(parse_latest(&value), Some(reservation), "{value}");
        }
        for value in [
            format!("|{due}"),
            "|".to_string(),
            String::new(),
            format!("{reservation}|{due}|x"),
        ] {
            assert_eq!(parse_latest(&value), None, "{value}");
        }
    }
}
