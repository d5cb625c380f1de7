//! The schema keeps its references whole: orders, buyers' rows and audit
//! rows name a sale and a user that exist, and neither can be deleted while
//! named. Since issue 19 the check runs once per insert statement instead
//! of once per row (migration `batch_integrity`); these are the guarantees
//! the foreign keys gave, tested against the real schema.

mod common;

use std::time::Duration;

use common::{Harness, WORKER};
use sqlx::PgPool;
use uuid::Uuid;

/// PostgreSQL's SQLSTATE for a broken reference, the foreign keys' own.
const FOREIGN_KEY_VIOLATION: &str = "23503";

async fn refused_as_broken_reference(pg: &PgPool, what: &str, sql: &'static str, binds: &[Uuid]) {
    let mut query = sqlx::query(sql);
    for value in binds {
        query = query.bind(*value);
    }
    let error = query
        .execute(pg)
        .await
        .expect_err(&format!("{what} was accepted"));
    let code = error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned());
    assert_eq!(
        code.as_deref(),
        Some(FOREIGN_KEY_VIOLATION),
        "{what}: {error}"
    );
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn rows_name_only_sales_and_users_that_exist_and_named_ones_stay(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(2).await;
    let buyer = users[0];
    let jobs = harness.reserve(&users[..1]).await;
    harness.enqueue(&jobs).await;
    let _worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(1, Duration::from_secs(30)).await;
    let (sale, nobody, no_sale) = (harness.sale.id, Uuid::now_v7(), Uuid::now_v7());
    let pg = &harness.pg;

    let order = "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity,
                                     unit_price, idempotency_key)
                 values (gen_random_uuid(), gen_random_uuid(), $1, $2, 1, 100, 'k')";
    refused_as_broken_reference(pg, "an order for a missing user", order, &[sale, nobody]).await;
    refused_as_broken_reference(pg, "an order in a missing sale", order, &[no_sale, buyer]).await;
    let buyer_row = "insert into sale_buyers (flash_sale_id, user_id, units, per_user_limit)
                     values ($1, $2, 1, 1)";
    refused_as_broken_reference(
        pg,
        "a buyer row for a missing user",
        buyer_row,
        &[sale, nobody],
    )
    .await;
    refused_as_broken_reference(
        pg,
        "a buyer row in a missing sale",
        buyer_row,
        &[no_sale, buyer],
    )
    .await;
    refused_as_broken_reference(
        pg,
        "an audit row in a missing sale",
        "insert into purchase_attempts (reservation_id, flash_sale_id, user_id, quantity,
                                        outcome, reserved_at)
         values (gen_random_uuid(), $1, $2, 1, 'confirmed', now())",
        &[no_sale, buyer],
    )
    .await;
    // One missing reference among many valid ones refuses the whole
    // statement (the batch shape settlement writes).
    refused_as_broken_reference(
        pg,
        "a batch with one order for a missing user",
        "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity,
                             unit_price, idempotency_key)
         select gen_random_uuid(), gen_random_uuid(), $1, u, 1, 100, 'batch'
         from unnest(array[$2, $3]::uuid[]) as u",
        &[sale, users[1], nobody],
    )
    .await;

    refused_as_broken_reference(
        pg,
        "deleting a user with an order",
        "delete from users where id = $1",
        &[buyer],
    )
    .await;
    refused_as_broken_reference(
        pg,
        "deleting a sale with orders",
        "delete from flash_sales where id = $1",
        &[sale],
    )
    .await;
    // Stricter than the foreign keys were (they let an order move to
    // another existing user): a row's sale and user never change.
    refused_as_broken_reference(
        pg,
        "moving an order to another user",
        "update orders set user_id = $2 where user_id = $1",
        &[buyer, users[1]],
    )
    .await;

    // A user nobody's rows name may still go (settlement then fails their
    // reservations `user_gone`, tested in settlement.rs).
    let deleted = sqlx::query("delete from users where id = $1")
        .bind(users[1])
        .execute(pg)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(pg)
        .await
        .unwrap();
    assert_eq!(orders, 1, "only the settled order exists");
}
