//! The schema keeps its references whole: orders, buyers' rows and audit
//! rows name a sale and a user that exist, and neither can be deleted,
//! truncated away or renumbered while named. Since issue 19 the checks run
//! once per insert statement instead of once per row (migration
//! `batch_integrity`); these are the guarantees
//! the foreign keys gave, tested against the real schema.

mod common;

use std::time::Duration;

use common::{Harness, WORKER};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// PostgreSQL's SQLSTATE for a broken reference, the foreign keys' own.
const FOREIGN_KEY_VIOLATION: &str = "23503";
/// A lock not granted within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// PostgreSQL's SQLSTATE for a change a rule of the schema forbids.
const RESTRICT_VIOLATION: &str = "23001";

async fn refused_with(
    code: &str,
    connection: &mut PgConnection,
    what: &str,
    sql: &'static str,
    binds: &[Uuid],
) {
    let mut query = sqlx::query(sql);
    for value in binds {
        query = query.bind(*value);
    }
    let error = query
        .execute(&mut *connection)
        .await
        .expect_err(&format!("{what} was accepted"));
    let found = error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned());
    assert_eq!(found.as_deref(), Some(code), "{what}: {error}");
}

async fn refused(connection: &mut PgConnection, what: &str, sql: &'static str, binds: &[Uuid]) {
    refused_with(FOREIGN_KEY_VIOLATION, connection, what, sql, binds).await;
}

async fn execute(connection: &mut PgConnection, sql: &'static str, binds: &[Uuid]) {
    let mut query = sqlx::query(sql);
    for value in binds {
        query = query.bind(*value);
    }
    query.execute(&mut *connection).await.unwrap();
}

const ORDER: &str = "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity,
                                         unit_price, idempotency_key)
                     values (gen_random_uuid(), gen_random_uuid(), $1, $2, 1, 100, 'k')";
const BUYER_ROW: &str = "insert into sale_buyers (flash_sale_id, user_id, units, per_user_limit)
                         values ($1, $2, 1, 1)";
const FAILED_AUDIT_ROW: &str =
    "insert into purchase_attempts (reservation_id, flash_sale_id, user_id,
                                                          quantity, outcome, reason, reserved_at)
                                values (gen_random_uuid(), $1, $2, 1, 'failed', 'no_stock', now())";

/// A sale with one settled order (of `users[0]`) and two more users who
/// have none.
async fn sale_with_one_order(pg: PgPool) -> (Harness, Vec<Uuid>) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(3).await;
    let jobs = harness.reserve(&users[..1]).await;
    harness.enqueue(&jobs).await;
    let _worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(1, Duration::from_secs(30)).await;
    (harness, users)
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn rows_name_only_sales_and_users_that_exist(pg: PgPool) {
    let (harness, users) = sale_with_one_order(pg).await;
    let (sale, nobody, no_sale) = (harness.sale.id, Uuid::now_v7(), Uuid::now_v7());
    let connection = &mut *harness.pg.acquire().await.unwrap();

    refused(
        connection,
        "an order for a missing user",
        ORDER,
        &[sale, nobody],
    )
    .await;
    refused(
        connection,
        "an order in a missing sale",
        ORDER,
        &[no_sale, users[1]],
    )
    .await;
    refused(
        connection,
        "a buyer row for a missing user",
        BUYER_ROW,
        &[sale, nobody],
    )
    .await;
    refused(
        connection,
        "a buyer row in a missing sale",
        BUYER_ROW,
        &[no_sale, users[1]],
    )
    .await;
    refused(
        connection,
        "an audit row in a missing sale",
        FAILED_AUDIT_ROW,
        &[no_sale, users[1]],
    )
    .await;
    // One missing reference among valid ones refuses the whole statement
    // (the batch shape settlement writes).
    refused(
        connection,
        "a batch with one order for a missing user",
        "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity,
                             unit_price, idempotency_key)
         select gen_random_uuid(), gen_random_uuid(), $1, u, 1, 100, 'batch'
         from unnest(array[$2, $3]::uuid[]) as u",
        &[sale, users[1], nobody],
    )
    .await;
    // A session's temporary `users` table is not where the check looks.
    execute(connection, "create temp table users (id uuid)", &[]).await;
    execute(connection, "insert into users values ($1)", &[nobody]).await;
    refused(
        connection,
        "an order for a user only a temporary table has",
        ORDER,
        &[sale, nobody],
    )
    .await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn named_sales_and_users_cannot_be_deleted_truncated_or_renumbered(pg: PgPool) {
    let (harness, users) = sale_with_one_order(pg).await;
    let (sale, buyer, only_a_buyer_row) = (harness.sale.id, users[0], users[1]);
    let connection = &mut *harness.pg.acquire().await.unwrap();
    execute(connection, BUYER_ROW, &[sale, only_a_buyer_row]).await;
    // Settlement wrote the buyer's order and no audit row (the order is the
    // record of a confirmed reservation); the buyer gets a failed one here so
    // that moving an audit row to another sale has a row to refuse.
    execute(connection, FAILED_AUDIT_ROW, &[sale, buyer]).await;

    let delete_user = "delete from users where id = $1";
    refused(
        connection,
        "deleting a user with an order",
        delete_user,
        &[buyer],
    )
    .await;
    refused(
        connection,
        "deleting a user with a buyer row",
        delete_user,
        &[only_a_buyer_row],
    )
    .await;
    refused(
        connection,
        "deleting a sale with orders",
        "delete from flash_sales where id = $1",
        &[sale],
    )
    .await;
    for truncate in ["truncate users cascade", "truncate flash_sales cascade"] {
        refused(connection, truncate, truncate, &[]).await;
    }
    refused(
        connection,
        "renumbering a user",
        "update users set id = gen_random_uuid() where id = $1",
        &[buyer],
    )
    .await;
    refused(
        connection,
        "renumbering a sale",
        "update flash_sales set id = gen_random_uuid() where id = $1",
        &[sale],
    )
    .await;
    // Stricter than the foreign keys were (they let a row move to another
    // existing user or sale): a row's sale and user never change.
    refused(
        connection,
        "moving an order to another user",
        "update orders set user_id = $2 where user_id = $1",
        &[buyer, users[2]],
    )
    .await;
    refused(
        connection,
        "moving a buyer row to another user",
        "update sale_buyers set user_id = $2 where user_id = $1",
        &[buyer, users[2]],
    )
    .await;
    refused(
        connection,
        "moving an audit row to another sale",
        "update purchase_attempts set flash_sale_id = gen_random_uuid() where user_id = $1",
        &[buyer],
    )
    .await;

    // A REPEATABLE READ snapshot could miss an order committed after it:
    // there, a delete is refused whatever it would find.
    execute(connection, "begin isolation level repeatable read", &[]).await;
    refused(
        connection,
        "deleting under REPEATABLE READ",
        delete_user,
        &[users[2]],
    )
    .await;
    execute(connection, "rollback", &[]).await;

    // A user nobody's rows name may go (settlement then fails their
    // reservations `user_gone`, tested in settlement.rs), and so may one
    // whose last naming row went first.
    let deleted = sqlx::query(delete_user)
        .bind(users[2])
        .execute(&mut *connection)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    execute(
        connection,
        "delete from sale_buyers where user_id = $1",
        &[only_a_buyer_row],
    )
    .await;
    let deleted = sqlx::query(delete_user)
        .bind(only_a_buyer_row)
        .execute(&mut *connection)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_insert_holds_what_it_names_until_it_commits(pg: PgPool) {
    let (harness, users) = sale_with_one_order(pg).await;
    let (sale, shopper) = (harness.sale.id, users[1]);

    let mut inserting = harness.pg.begin().await.unwrap();
    execute(&mut inserting, ORDER, &[sale, shopper]).await;
    // The check locked the shopper `for key share`: a delete waits for
    // the insert instead of slipping between its check and its commit.
    let deleting = &mut *harness.pg.acquire().await.unwrap();
    execute(deleting, "set lock_timeout = '300ms'", &[]).await;
    let delete_user = "delete from users where id = $1";
    refused_with(
        LOCK_NOT_AVAILABLE,
        deleting,
        "deleting a user an uncommitted order names",
        delete_user,
        &[shopper],
    )
    .await;
    inserting.commit().await.unwrap();
    refused(
        deleting,
        "deleting the user once the order committed",
        delete_user,
        &[shopper],
    )
    .await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_order_is_kept_whole_as_the_record_of_its_reservation(pg: PgPool) {
    // Since the order is the record of a confirmed reservation (migration
    // `the_order_is_the_record`), deleting one, pointing it at another
    // reservation or renumbering it would erase a sale PostgreSQL
    // committed: no audit row remembers it.
    let (harness, users) = sale_with_one_order(pg).await;
    let buyer = users[0];
    let connection = &mut *harness.pg.acquire().await.unwrap();
    let buyers_orders = [buyer];
    for (what, sql, binds) in [
        (
            "deleting an order",
            "delete from orders where user_id = $1",
            &buyers_orders[..],
        ),
        (
            "giving an order another reservation",
            "update orders set reservation_id = gen_random_uuid() where user_id = $1",
            &buyers_orders,
        ),
        (
            "renumbering an order (its payments name it)",
            "update orders set id = gen_random_uuid() where user_id = $1",
            &buyers_orders,
        ),
        ("truncating the orders", "truncate orders", &[]),
    ] {
        refused_with(RESTRICT_VIOLATION, connection, what, sql, binds).await;
    }
    // The rest of an order (its status, when it changed) still changes.
    let touched = sqlx::query("update orders set updated_at = now() where user_id = $1")
        .bind(buyer)
        .execute(&mut *connection)
        .await
        .unwrap();
    assert_eq!(touched.rows_affected(), 1);
}
