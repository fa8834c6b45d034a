use channels::consumer;
use channels::prelude::*;

#[consumer(http, methods = ["get", "POST"])]
struct Lowercase;

#[consumer(http, methods = [])]
struct Empty;

#[consumer(websocket, methods = ["GET"])]
struct NotHttp;

#[consumer]
impl Lowercase {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.text(StatusCode::OK, "ok").await?;
        Ok(())
    }
}

fn main() {}
