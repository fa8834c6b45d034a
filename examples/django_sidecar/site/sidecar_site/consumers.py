"""The same two sockets as the Rust server's, served by Channels under daphne: for the benchmark
(bench/django.sh) and to show that a group_send from the Rust server reaches them."""
from channels.generic.websocket import AsyncJsonWebsocketConsumer


class WhoamiConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope["user"]
        await self.accept()
        await self.send_json({
            "username": user.get_username() if user.is_authenticated else "",
            "is_authenticated": user.is_authenticated,
        })


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """The Channels tutorial's chat room."""

    async def connect(self):
        self.group = f"chat_{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content):
        await self.channel_layer.group_send(self.group, {"type": "chat.message", "message": content["message"]})

    async def chat_message(self, event):
        await self.send_json({"message": event["message"]})
