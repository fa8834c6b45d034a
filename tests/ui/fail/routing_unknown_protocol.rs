use channels::{consumer, routing};

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {}

fn main() {
    let _app = routing! {
        websockets: [
            "ws/chat/" => Chat,
        ],
        "http": [],
    };
}
