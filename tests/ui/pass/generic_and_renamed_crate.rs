//! Generic consumers, `crate = ...`, unit structs and an explicit `scope` field.

use std::marker::PhantomData;

use channels::prelude::*;

mod renamed {
    pub use channels::*;
}

#[channels::consumer(websocket, crate = renamed)]
struct Unit;

#[channels::consumer(crate = renamed)]
impl Unit {}

#[channels::consumer(json)]
struct Typed<T: Send + 'static> {
    scope: Scope,
    #[url("id")]
    id: u64,
    marker: PhantomData<fn() -> T>,
}

#[channels::consumer]
impl<T: Send + 'static> Typed<T> {
    async fn receive_json(&mut self, ws: &mut Websocket, content: serde_json::Value) -> Result<(), ConsumerError> {
        ws.send_json(&serde_json::json!({ "id": self.id, "path": self.scope.path, "got": content })).await
    }

    async fn disconnect(&mut self, _code: u16) {}
}

fn main() {
    let _app = channels::routing! {
        crate = renamed,
        websocket: [
            "unit/" => Unit,
            "typed/<int:id>/" => Typed<u8>,
            re_path(r"typed-re/(?P<id>\d+)/") => Typed<u16>,
            path("^literal/<int:id>/") => Typed<u32>,
        ],
    };
}
