"""A TCP relay that counts flights: for each connection, how many times the
client (mailveil) started sending again after the server (Postfix) had sent
something. A lock-step SMTP client makes one flight per command; a
pipelining one makes one per group. The bytes are TLS and are passed on
untouched; only their direction is seen.

    flights.py --listen 127.0.0.2:10467 --to 127.0.0.2:10465 --out FILE

Appends one line per connection to FILE when it closes: the number of
flights. Runs until killed (run.sh stops it); loopback only."""

import argparse
import asyncio

ap = argparse.ArgumentParser()
ap.add_argument("--listen", required=True)
ap.add_argument("--to", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()


def split(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def handle(client_r, client_w):
    server_r, server_w = await asyncio.open_connection(*split(args.to))
    state = {"last": None, "flights": 0}

    async def pump(reader, writer, direction):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if direction == "up" and state["last"] != "up":
                    state["flights"] += 1
                state["last"] = direction
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except OSError:
                pass

    await asyncio.gather(pump(client_r, server_w, "up"), pump(server_r, client_w, "down"))
    with open(args.out, "a") as f:
        f.write(f"{state['flights']}\n")


async def main():
    server = await asyncio.start_server(handle, *split(args.listen))
    async with server:
        await server.serve_forever()


asyncio.run(main())
