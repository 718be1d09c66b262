//! An evaluation's events as server-sent events: one SSE message per `EvaluateEvent`, named after its
//! oneof case (`started`, `textDelta`, `regionBox`, `heatmap`, `score`, `done`), its data the proto3
//! JSON of the whole event. A failure after the stream started is a last `error` message with
//! `{"code","message"}`. Dropping the response (the client closed the connection) drops the event
//! stream, which cancels the evaluation on the engine thread.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use heie_proto::v1 as pb;
use tokio_stream::{Stream, StreamExt as _};
use crate::serving::Code;

use super::error::ApiError;
use crate::serving::ServingError;

/// How often an idle stream (queued behind other work) sends a comment line, so proxies keep it open
/// and a vanished client is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The SSE response for a stream of evaluation events.
pub(super) fn response(events: impl Stream<Item = Result<pb::EvaluateEvent, ServingError>> + Send + 'static) -> Response {
    let messages = events.map(|item| Ok::<_, Infallible>(message(item)));
    Sse::new(messages).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// One SSE message.
fn message(item: Result<pb::EvaluateEvent, ServingError>) -> Event {
    match item {
        Ok(event) => match serde_json::to_string(&event) {
            Ok(data) => Event::default().event(case_name(&event)).data(data),
            Err(e) => error(Code::Internal, &ServingError::internal(format!("encoding an event as JSON: {e}")).to_string()),
        },
        Err(e) => error(e.code(), &e.to_string()),
    }
}

fn error(code: Code, message: &str) -> Event {
    Event::default().event("error").data(ApiError::body(code, message).to_string())
}

/// The SSE event name: the oneof case, as its proto3 JSON field name.
pub(super) fn case_name(event: &pb::EvaluateEvent) -> &'static str {
    use pb::evaluate_event::Event as E;
    match &event.event {
        Some(E::Started(_)) => "started",
        Some(E::TextDelta(_)) => "textDelta",
        Some(E::RegionBox(_)) => "regionBox",
        Some(E::Heatmap(_)) => "heatmap",
        Some(E::Score(_)) => "score",
        Some(E::Regions(_)) => "regions",
        Some(E::Done(_)) => "done",
        // The service always sets a case; an empty event still goes out rather than vanishing.
        None => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_match_the_json_field_of_the_case() {
        let delta = pb::EvaluateEvent {
            event: Some(pb::evaluate_event::Event::TextDelta(pb::TextDelta { section: pb::Section::Regions as i32, text: "a\nb".into() })),
        };
        let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&delta).unwrap()).unwrap();
        let field = json.as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(field, case_name(&delta));
        assert_eq!(json["textDelta"]["section"], "SECTION_REGIONS");
        assert_eq!(json["textDelta"]["text"], "a\nb");
    }
}
