//! Logging the crowd in and each shopper's one purchase, retried the way a
//! careful client retries: same Idempotency-Key, Retry-After honoured.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use serde_json::{Value, json};

use crate::{
    Args,
    report::{Answer, Kind, Recorder, Story, unix_ms},
};

/// One request's answer: its status (or none), body and Retry-After.
pub struct Reply {
    pub answer: Answer,
    pub body: Value,
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// Worth asking again with the same request: throttled, unavailable, or
    /// no answer at all.
    pub fn is_transient(&self) -> bool {
        match self.answer {
            Answer::Status(status) => status == 429 || status >= 500,
            Answer::ConnectionError | Answer::TimedOut => true,
        }
    }

    fn code(&self) -> Option<String> {
        self.body["error"]["code"].as_str().map(str::to_owned)
    }
}

pub async fn send(recorder: &Recorder, kind: Kind, request: reqwest::RequestBuilder) -> Reply {
    let started = Instant::now();
    let result = request.send().await;
    let (answer, body, retry_after) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok())
                .map(Duration::from_secs);
            match response.bytes().await {
                Ok(bytes) => (
                    Answer::Status(status),
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    retry_after,
                ),
                Err(error) => (no_answer(&error), Value::Null, None),
            }
        }
        Err(error) => (no_answer(&error), Value::Null, None),
    };
    recorder.record(kind, answer, started.elapsed());
    Reply {
        answer,
        body,
        retry_after,
    }
}

fn no_answer(error: &reqwest::Error) -> Answer {
    if error.is_timeout() {
        Answer::TimedOut
    } else {
        Answer::ConnectionError
    }
}

/// Pause before asking again: what the server asked for, else a short
/// backoff that grows with the attempts (capped at 2 s).
pub fn backoff(reply: &Reply, attempt: u32) -> Duration {
    reply
        .retry_after
        .unwrap_or_else(|| Duration::from_millis((100 * u64::from(attempt)).min(2_000)))
}

/// Logs every shopper in (retrying transient failures); returns (user id,
/// token) per shopper, in order.
pub async fn log_in_all(
    client: &reqwest::Client,
    args: &Args,
    recorder: &Recorder,
) -> Result<Vec<(String, String)>, String> {
    let results: Vec<Result<(String, String), String>> = stream::iter(0..args.users)
        .map(|index| async move {
            let email = format!("crowd-{}-{index}@load.local", args.run_id);
            let deadline = Instant::now() + Duration::from_secs(args.give_up_secs);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let request = client
                    .post(format!("{}/api/auth/login", args.host))
                    .json(&json!({ "email": email }));
                let reply = send(recorder, Kind::Other, request).await;
                match (reply.answer, reply.body["token"].as_str()) {
                    (Answer::Status(200), Some(token)) => {
                        let user_id = reply.body["user"]["id"].as_str().unwrap_or_default();
                        return Ok((user_id.to_owned(), token.to_owned()));
                    }
                    _ if reply.is_transient() && Instant::now() < deadline => {
                        tokio::time::sleep(backoff(&reply, attempt)).await;
                    }
                    (answer, _) => {
                        return Err(format!(
                            "login of {email} answered {answer:?}: {}",
                            reply.body
                        ));
                    }
                }
            }
        })
        // In order: shopper n must be the account `crowd-<run>-<n>` (the
        // scenarios find shoppers by email).
        .buffered(args.concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// One shopper's purchase, from the first attempt to a final answer.
pub async fn buy_once(
    client: &reqwest::Client,
    args: &Args,
    recorder: &Recorder,
    index: usize,
    user_id: String,
    token: String,
) -> Story {
    let mut story = Story {
        user: index,
        user_id,
        idempotency_key: format!("crowd-{}-{index}", args.run_id),
        quantity: 1 + (index as u32) % args.max_quantity.max(1),
        ..Story::default()
    };
    let (key, quantity) = (story.idempotency_key.clone(), story.quantity);
    let attempt_request = || attempt(client, args, &token, &key, quantity);
    let deadline = Instant::now() + Duration::from_secs(args.give_up_secs);
    loop {
        story.attempts += 1;
        let sent = unix_ms();
        let reply = send(recorder, Kind::Purchase, attempt_request()).await;
        story.saw(sent, reply.answer);
        if reply.is_transient() {
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(backoff(&reply, story.attempts)).await;
            continue;
        }
        let Answer::Status(status) = reply.answer else {
            unreachable!("answers without a status are transient")
        };
        story.status = Some(status);
        story.code = reply.code();
        story.reservation_id = reply.body["reservation_id"].as_str().map(str::to_owned);
        break;
    }
    if let Some(first) = story.reservation_id.clone() {
        // The same key again: the contract says the same reservation comes
        // back, never a second one.
        let sent = unix_ms();
        let replay = send(recorder, Kind::Purchase, attempt_request()).await;
        story.saw(sent, replay.answer);
        story.attempts += 1;
        if let Some(again) = replay.body["reservation_id"].as_str() {
            story.replay_matched = Some(again == first);
        }
    }
    story.token = token;
    story
}

fn attempt(
    client: &reqwest::Client,
    args: &Args,
    token: &str,
    key: &str,
    quantity: u32,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{}/api/purchase/attempt", args.host))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "sale_id": args.sale_id, "quantity": quantity }))
}

/// Waits for `signal`, then sends every accepted shopper's key again
/// (retrying transient answers) and notes what came back.
pub async fn retry_all(
    client: &reqwest::Client,
    args: &Args,
    recorder: &Recorder,
    stories: Vec<Story>,
    signal: &std::path::Path,
) -> Vec<Story> {
    eprintln!("crowd: waiting for {} to retry every key", signal.display());
    while !signal.exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("crowd: retrying every key");
    stream::iter(stories)
        .map(|mut story| async move {
            if story.reservation_id.is_none() {
                return story;
            }
            let deadline = Instant::now() + Duration::from_secs(args.give_up_secs);
            let mut attempt_number = 0;
            loop {
                attempt_number += 1;
                let request = attempt(
                    client,
                    args,
                    &story.token,
                    &story.idempotency_key,
                    story.quantity,
                );
                let reply = send(recorder, Kind::Purchase, request).await;
                if reply.is_transient() && Instant::now() < deadline {
                    tokio::time::sleep(backoff(&reply, attempt_number)).await;
                    continue;
                }
                if let Answer::Status(status) = reply.answer {
                    story.retry_status = Some(status);
                }
                story.retry_reservation_id =
                    reply.body["reservation_id"].as_str().map(str::to_owned);
                return story;
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await
}
