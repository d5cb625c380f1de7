//! `browse`: anonymous reads of the current sale, the request a stampede
//! starts with. nginx may answer them from its 1 s micro-cache.

use goose::prelude::*;

use crate::shopper::expect_ok;

pub fn scenario() -> Scenario {
    scenario!("browse")
        .register_transaction(transaction!(read_sale_status).set_name("read the sale"))
}

async fn read_sale_status(user: &mut GooseUser) -> TransactionResult {
    let request = GooseRequest::builder()
        .path("/api/flash-sale/status")
        .name("sale status (anonymous)")
        .build();
    let goose = user.request(request).await?;
    expect_ok(user, goose).await?;
    Ok(())
}
