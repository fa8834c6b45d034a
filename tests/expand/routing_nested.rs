use channels::prelude::*;
use channels::{consumer, routing};

#[consumer(websocket)]
pub struct Room {
    #[url]
    name: String,
}

#[consumer]
impl Room {}

#[consumer(websocket)]
pub struct Lobby;

#[consumer]
impl Lobby {}

fn main() {
    let _app = routing! {
        websocket: [
            "ws/" => [
                r"^rooms/(?P<name>\w+)/$" => Room,
                "lobby/" => Lobby,
            ],
            "raw/" => { ConsumerApp::websocket(|_scope| Ok(Lobby { scope: _scope })) },
        ],
    };
}
