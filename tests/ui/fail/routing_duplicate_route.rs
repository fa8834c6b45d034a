use channels::{consumer, routing};

#[consumer(websocket)]
struct Chat {}

#[consumer]
impl Chat {}

#[consumer(websocket)]
struct Other {}

#[consumer]
impl Other {}

fn main() {
    let _app = routing! {
        websocket: [
            "ws/chat/" => Chat,
            "ws/chat/" => Other,
        ],
    };
}
