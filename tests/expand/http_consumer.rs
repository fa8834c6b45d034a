use bytes::Bytes;
use channels::consumer;
use channels::prelude::*;
use http::StatusCode;

#[consumer(http)]
pub struct Item {
    #[url]
    id: u64,
}

#[consumer]
impl Item {
    async fn handle(&mut self, _body: Bytes, response: &mut HttpResponse) -> Result<(), ConsumerError> {
        response.text(StatusCode::OK, self.id.to_string()).await?;
        Ok(())
    }
}

fn main() {}
