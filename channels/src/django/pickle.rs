//! The part of Python's pickle that Django's cache session engines need: a session dictionary
//! of strings, numbers, booleans, `None`, lists, tuples and dictionaries, as Django's
//! `RedisCache` (and django-redis's default serializer) store it. Anything else (a datetime, a
//! class instance: pickle's `GLOBAL`/`REDUCE`) is refused, never executed.

use serde_json::{Map, Number, Value};

/// At most this many values on the unpickler's stack and memo (a hostile or corrupt value
/// cannot make it hold more).
const MAX_ITEMS: usize = 100_000;

/// At most this many bytes of strings copied out of the memo (`BINGET`): a memoized string
/// fetched again and again must not multiply into gigabytes.
const MAX_MEMO_COPIES: usize = 16 << 20;

/// Why a pickle was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable pickle: {0}")]
pub(crate) struct PickleError(String);

fn error(message: impl Into<String>) -> PickleError {
    PickleError(message.into())
}

/// What the unpickler's stack holds.
enum Item {
    Value(Value),
    Mark,
}

/// Reads a pickle (protocols 2 to 5) of plain data.
pub(crate) fn loads(data: &[u8]) -> Result<Value, PickleError> {
    let mut stack: Vec<Item> = Vec::new();
    // Leaves only: a memoized list or dict is kept as `None` (never copied, never fetched).
    let mut memo: Vec<Option<Value>> = Vec::new();
    let mut copied = 0usize;
    let mut at = 0;
    // A memoized value fetched again: leaves only (a container fetched twice would let a few
    // bytes of input double the output again and again), within the copy budget.
    let fetch = |memo: &[Option<Value>], index: usize, copied: &mut usize| -> Result<Value, PickleError> {
        let value = memo.get(index).ok_or_else(|| error("unknown memo"))?;
        let value = value.as_ref().ok_or_else(|| error("a shared reference to a list or dict"))?;
        *copied += match value {
            Value::String(text) => text.len(),
            _ => 8,
        };
        if *copied > MAX_MEMO_COPIES {
            return Err(error("too large"));
        }
        Ok(value.clone())
    };
    let take = |at: &mut usize, n: usize| -> Result<&[u8], PickleError> {
        let bytes = data.get(*at..*at + n).ok_or_else(|| error("truncated"))?;
        *at += n;
        Ok(bytes)
    };
    let pop = |stack: &mut Vec<Item>| -> Result<Value, PickleError> {
        match stack.pop() {
            Some(Item::Value(value)) => Ok(value),
            _ => Err(error("stack underflow")),
        }
    };
    // The values above the topmost mark, and the mark removed.
    let pop_mark = |stack: &mut Vec<Item>| -> Result<Vec<Value>, PickleError> {
        let mark = stack.iter().rposition(|item| matches!(item, Item::Mark)).ok_or_else(|| error("no mark"))?;
        let values = stack.split_off(mark + 1);
        stack.pop();
        Ok(values
            .into_iter()
            .filter_map(|item| if let Item::Value(value) = item { Some(value) } else { None })
            .collect())
    };
    loop {
        if stack.len() > MAX_ITEMS || memo.len() > MAX_ITEMS {
            return Err(error("too large"));
        }
        let opcode = *take(&mut at, 1)?.first().ok_or_else(|| error("truncated"))?;
        match opcode {
            0x80 => {
                take(&mut at, 1)?;
            }
            0x95 => {
                take(&mut at, 8)?;
            }
            b'.' => return pop(&mut stack),
            b'}' => stack.push(Item::Value(Value::Object(Map::new()))),
            b']' => stack.push(Item::Value(Value::Array(Vec::new()))),
            b')' => stack.push(Item::Value(Value::Array(Vec::new()))),
            b'(' => stack.push(Item::Mark),
            b'N' => stack.push(Item::Value(Value::Null)),
            0x88 => stack.push(Item::Value(Value::Bool(true))),
            0x89 => stack.push(Item::Value(Value::Bool(false))),
            b'K' => stack.push(Item::Value(Value::from(take(&mut at, 1)?[0]))),
            b'M' => {
                let bytes = take(&mut at, 2)?;
                stack.push(Item::Value(Value::from(u16::from_le_bytes([bytes[0], bytes[1]]))));
            }
            b'J' => {
                let bytes = take(&mut at, 4)?;
                stack.push(Item::Value(Value::from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))));
            }
            0x8a => {
                let n = usize::from(take(&mut at, 1)?[0]);
                let bytes = take(&mut at, n)?;
                if n > 8 {
                    return Err(error("integer wider than 64 bits"));
                }
                let fill = if bytes.last().is_some_and(|last| last & 0x80 != 0) { 0xff } else { 0 };
                let mut wide = [fill; 8];
                wide[..n].copy_from_slice(bytes);
                stack.push(Item::Value(Value::from(i64::from_le_bytes(wide))));
            }
            b'G' => {
                let bytes = take(&mut at, 8)?;
                let float = f64::from_be_bytes(bytes.try_into().map_err(|_| error("truncated"))?);
                stack.push(Item::Value(Number::from_f64(float).map_or(Value::Null, Value::Number)));
            }
            0x8c => {
                let n = usize::from(take(&mut at, 1)?[0]);
                stack.push(Item::Value(Value::String(text(take(&mut at, n)?)?)));
            }
            b'X' => {
                let bytes = take(&mut at, 4)?;
                let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                stack.push(Item::Value(Value::String(text(take(&mut at, n)?)?)));
            }
            0x8d => {
                let bytes = take(&mut at, 8)?;
                let n = usize::try_from(u64::from_le_bytes(bytes.try_into().map_err(|_| error("truncated"))?))
                    .map_err(|_| error("too large"))?;
                stack.push(Item::Value(Value::String(text(take(&mut at, n)?)?)));
            }
            0x94 => match stack.last() {
                Some(Item::Value(value)) => memo.push(leaf(value)),
                _ => return Err(error("memoize without a value")),
            },
            b'q' => {
                // BINPUT: memo[index] = top (protocol 2 writes these).
                let index = usize::from(take(&mut at, 1)?[0]);
                let Some(Item::Value(value)) = stack.last() else { return Err(error("put without a value")) };
                if memo.len() <= index {
                    memo.resize(index + 1, None);
                }
                memo[index] = leaf(value);
            }
            b'h' => {
                let index = usize::from(take(&mut at, 1)?[0]);
                stack.push(Item::Value(fetch(&memo, index, &mut copied)?));
            }
            b'j' => {
                let bytes = take(&mut at, 4)?;
                let index = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                stack.push(Item::Value(fetch(&memo, index, &mut copied)?));
            }
            b'a' => {
                let value = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Item::Value(Value::Array(list))) => list.push(value),
                    _ => return Err(error("append to a non-list")),
                }
            }
            b'e' => {
                let values = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Item::Value(Value::Array(list))) => list.extend(values),
                    _ => return Err(error("appends to a non-list")),
                }
            }
            b's' => {
                let value = pop(&mut stack)?;
                let key = pop(&mut stack)?;
                set_items(&mut stack, vec![key, value])?;
            }
            b'u' => {
                let values = pop_mark(&mut stack)?;
                set_items(&mut stack, values)?;
            }
            b't' => {
                let values = pop_mark(&mut stack)?;
                stack.push(Item::Value(Value::Array(values)));
            }
            0x85..=0x87 => {
                let n = usize::from(opcode - 0x84);
                if stack.len() < n {
                    return Err(error("stack underflow"));
                }
                let values = stack.split_off(stack.len() - n);
                let values = values
                    .into_iter()
                    .map(|item| if let Item::Value(value) = item { Ok(value) } else { Err(error("mark in a tuple")) });
                stack.push(Item::Value(Value::Array(values.collect::<Result<_, _>>()?)));
            }
            other => return Err(error(format!("opcode {other:#04x} (not plain data)"))),
        }
    }
}

/// What the memo keeps of a value: a copy of a leaf, nothing of a list or dict.
fn leaf(value: &Value) -> Option<Value> {
    match value {
        Value::Array(_) | Value::Object(_) => None,
        leaf => Some(leaf.clone()),
    }
}

fn text(bytes: &[u8]) -> Result<String, PickleError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| error("string not UTF-8"))
}

/// `SETITEMS`: pairs into the dictionary below them (string keys only, as JSON).
fn set_items(stack: &mut [Item], values: Vec<Value>) -> Result<(), PickleError> {
    let Some(Item::Value(Value::Object(map))) = stack.last_mut() else { return Err(error("set item on a non-dict")) };
    let mut values = values.into_iter();
    while let (Some(key), Some(value)) = (values.next(), values.next()) {
        let Value::String(key) = key else { return Err(error("non-string dictionary key")) };
        map.insert(key, value);
    }
    Ok(())
}

/// Writes `value` as a protocol-4 pickle Python reads back as the same dictionary (lists for
/// arrays).
pub(crate) fn dumps(value: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    write(&mut out, value);
    out.push(b'.');
    out
}

fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                match i32::try_from(int) {
                    Ok(small) => {
                        out.push(b'J');
                        out.extend_from_slice(&small.to_le_bytes());
                    }
                    Err(_) => {
                        out.extend_from_slice(&[0x8a, 8]);
                        out.extend_from_slice(&int.to_le_bytes());
                    }
                }
            } else if let Some(unsigned) = number.as_u64() {
                // Above i64::MAX: nine bytes, the last one 0 so Python reads it as positive.
                out.extend_from_slice(&[0x8a, 9]);
                out.extend_from_slice(&unsigned.to_le_bytes());
                out.push(0);
            } else {
                out.push(b'G');
                out.extend_from_slice(&number.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(text) => {
            out.push(b'X');
            out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        Value::Array(items) => {
            out.extend_from_slice(b"](");
            for item in items {
                write(out, item);
            }
            out.push(b'e');
        }
        Value::Object(map) => {
            out.extend_from_slice(b"}(");
            for (key, item) in map {
                write(out, &Value::String(key.clone()));
                write(out, item);
            }
            out.push(b'u');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_session_dict_reads() {
        // pickle.dumps({"_auth_user_id": "1", "n": 300, "big": 2**40, "neg": -5, "f": 1.5,
        //   "ok": True, "no": None, "l": [1, "a"], "t": (1, 2), "d": {"x": "é"}}, protocol=5)
        let data = b"\x80\x05\x95z\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x0d_auth_user_id\x94\x8c\x011\x94\x8c\x01n\x94M,\x01\x8c\x03big\x94\x8a\x06\x00\x00\x00\x00\x00\x01\x8c\x03neg\x94J\xfb\xff\xff\xff\x8c\x01f\x94G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x02ok\x94\x88\x8c\x02no\x94N\x8c\x01l\x94]\x94(K\x01\x8c\x01a\x94e\x8c\x01t\x94K\x01K\x02\x86\x94\x8c\x01d\x94}\x94\x8c\x01x\x94\x8c\x02\xc3\xa9\x94su.";
        let value = loads(data).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"_auth_user_id": "1", "n": 300, "big": 1_099_511_627_776_i64, "neg": -5, "f": 1.5,
                "ok": true, "no": null, "l": [1, "a"], "t": [1, 2], "d": {"x": "é"}})
        );
        assert_eq!(loads(&dumps(&value)).unwrap(), value);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = loads(&data);
        }

        #[test]
        fn prefixed_garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut pickle = vec![0x80, 0x04, b'}', b'('];
            pickle.extend(data);
            let _ = loads(&pickle);
        }
    }

    #[test]
    fn code_and_garbage_are_refused() {
        // pickle.dumps(datetime.date(2026, 1, 1)): a global and a reduce.
        let date = b"\x80\x04\x95 \x00\x00\x00\x00\x00\x00\x00\x8c\x08datetime\x94\x8c\x04date\x94\x93\x94C\x04\x07\xea\x01\x01\x94\x85\x94R\x94.";
        assert!(loads(date).is_err());
        assert!(loads(b"").is_err());
        assert!(loads(b"\x80\x04}(").is_err());
        assert!(loads(b"\x80\x04(((((((((.").is_err());
        assert!(loads(b"\x80\x04X\xff\xff\xff\xff").is_err());
        // A memoized list fetched twice (a shared reference): refused, not copied.
        assert!(loads(b"\x80\x04]\x94h\x00h\x00.").is_err());
        // One memoized 1 MiB string fetched more often than the copy budget allows, each copy
        // appended at once (the stack stays small): refused once past 16 MiB.
        let copies = |n: usize| {
            let mut pickle = b"\x80\x04]X\x00\x00\x10\x00".to_vec();
            pickle.extend(std::iter::repeat_n(b'x', 1 << 20));
            pickle.extend(b"\x94a");
            pickle.extend(std::iter::repeat_n(*b"h\x00a", n).flatten());
            pickle.push(b'.');
            loads(&pickle)
        };
        assert_eq!(copies(15).map(|list| list.as_array().map(Vec::len)), Ok(Some(16)));
        assert!(copies(17).is_err());
    }
}
