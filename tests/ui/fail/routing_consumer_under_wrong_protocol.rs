use bytes::Bytes;
use channels::prelude::*;
use channels::{consumer, routing};
use http::StatusCode;

#[consumer(http)]
struct Page {}

#[consumer]
impl Page {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.text(StatusCode::OK, "page").await?;
        Ok(())
    }
}

fn main() {
    let _app = routing! {
        websocket: [
            "ws/page/" => Page,
        ],
    };
}
