//! Following accepted reservations through `GET /api/purchase/status` until
//! each has ended, the way a shopper's page would.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};

use crate::{
    Args,
    purchase::send,
    report::{Answer, Kind, Recorder, Story, unix_ms},
};

/// Pause between rounds over the reservations still open.
const ROUND_PAUSE: Duration = Duration::from_millis(500);
/// A reservation the API no longer knows may still turn up as an order (a
/// worker held its job while Redis lost it); once nothing has changed for
/// this long, "not found" is taken as its end.
const NOT_FOUND_SETTLES_AFTER: Duration = Duration::from_secs(10);

pub async fn follow_all(
    client: &reqwest::Client,
    args: &Args,
    recorder: &Recorder,
    mut stories: Vec<Story>,
) -> Vec<Story> {
    let deadline = Instant::now() + Duration::from_secs(args.follow_secs);
    let mut last_change = Instant::now();
    loop {
        let open: Vec<usize> = stories
            .iter()
            .enumerate()
            .filter(|(_, story)| {
                story.reservation_id.is_some()
                    && matches!(
                        story.outcome.as_deref(),
                        None | Some("pending" | "error" | "not_found")
                    )
            })
            .map(|(index, _)| index)
            .collect();
        let only_not_found = open
            .iter()
            .all(|&index| stories[index].outcome.as_deref() == Some("not_found"));
        if open.is_empty() || (only_not_found && last_change.elapsed() >= NOT_FOUND_SETTLES_AFTER) {
            break;
        }
        let reads: Vec<(usize, Read)> = stream::iter(open)
            .map(|index| {
                let story = &stories[index];
                async move { (index, read_status(client, args, recorder, story).await) }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        for (index, read) in reads {
            let story = &mut stories[index];
            story.saw(read.sent_ms, read.answer);
            if story.outcome.as_deref() != Some(read.outcome.as_str()) {
                last_change = Instant::now();
            }
            story.outcome = Some(read.outcome);
            story.reason = read.reason;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    stories
}

/// One status read: where the reservation stands, and the request's answer.
struct Read {
    outcome: String,
    reason: Option<String>,
    sent_ms: u64,
    answer: Answer,
}

async fn read_status(
    client: &reqwest::Client,
    args: &Args,
    recorder: &Recorder,
    story: &Story,
) -> Read {
    let reservation = story.reservation_id.as_deref().unwrap_or_default();
    let request = client
        .get(format!(
            "{}/api/purchase/status?reservation_id={reservation}&sale_id={}",
            args.host, args.sale_id
        ))
        .bearer_auth(&story.token);
    let sent_ms = unix_ms();
    let reply = send(recorder, Kind::Other, request).await;
    let mut reason = reply.body["reason"]
        .as_str()
        .or(reply.body["error"]["message"].as_str())
        .map(str::to_owned);
    let code = reply.body["error"]["code"].as_str();
    let outcome = match reply.answer {
        Answer::Status(200) => match reply.body["status"].as_str() {
            Some(status @ ("confirmed" | "failed" | "pending")) => status,
            _ => {
                reason = Some(reply.body.to_string());
                "error"
            }
        },
        Answer::Status(404) if code == Some("PURCHASE_NOT_FOUND") => "not_found",
        // The account was banned: the shopper can no longer look; the
        // operator sees how the reservation ended.
        Answer::Status(403) if code == Some("ACCOUNT_SUSPENDED") => "suspended",
        _ => "error",
    };
    Read {
        outcome: outcome.to_owned(),
        reason,
        sent_ms,
        answer: reply.answer,
    }
}
