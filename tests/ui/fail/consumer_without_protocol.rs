use channels::consumer;

#[consumer]
struct Chat {
    count: u32,
}

fn main() {}
