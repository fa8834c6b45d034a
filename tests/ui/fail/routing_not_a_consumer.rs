use channels::prelude::*;
use channels::routing;

struct Echo;

impl WebsocketConsumer for Echo {}

fn main() {
    let _app = routing! {
        websocket: [
            "ws/echo/" => Echo,
        ],
    };
}
