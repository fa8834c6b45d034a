"""channels_redis 4.x's RedisChannelLayer, driven for tests/channels_redis.rs.

Usage: channels_redis_helper.py REDIS_URL PREFIX COMMAND ARGS...
  group-send GROUP JSON     group_send a message
  send CHANNEL JSON         send a message to a channel
  listen GROUP              join GROUP with a new channel, print the channel, then print the
                            first message it receives (JSON) and exit
  listen-channel            print a new process-specific channel, then its first message
  garbage KEY               put a member that is not msgpack into KEY
"""
import asyncio
import json
import sys

from channels_redis.core import RedisChannelLayer


async def main(url, prefix, command, *args):
    layer = RedisChannelLayer(hosts=[url], prefix=prefix)
    if command == "group-send":
        group, message = args
        await layer.group_send(group, json.loads(message))
    elif command == "send":
        channel, message = args
        await layer.send(channel, json.loads(message))
    elif command in ("listen", "listen-channel"):
        channel = await layer.new_channel()
        if command == "listen":
            await layer.group_add(args[0], channel)
        print(channel, flush=True)
        message = await asyncio.wait_for(layer.receive(channel), timeout=20)
        print(json.dumps(message, sort_keys=True), flush=True)
    elif command == "garbage":
        # Something no channels_redis writer makes, in a channel's key.
        import redis.asyncio

        (key,) = args
        client = redis.asyncio.from_url(url)
        await client.zadd(key, {b"twelve bytes\xc1\xc1 not msgpack": 1})
        await client.aclose()
    else:
        raise SystemExit(f"unknown command {command}")
    await layer.close_pools()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
