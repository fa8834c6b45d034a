use channels::consumer;

struct Pool;

#[consumer(websocket)]
struct Chat {
    pool: Pool,
}

#[consumer]
impl Chat {}

fn main() {}
