"""An MCP client nobody in AgentKeys wrote: the Python `mcp` SDK (PyPI).

Starts `agentkeysctl mcp` as a stdio server (argv[1] = the agentkeysctl binary; the
environment carries AGENTKEYS_MCP_SOCKET), initializes, lists the tools, calls
list_credentials and get_credential(argv[2]), and prints one JSON object with what it saw.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    binary, service = sys.argv[1], sys.argv[2]
    params = StdioServerParameters(
        command=binary,
        args=["mcp"],
        env={"AGENTKEYS_MCP_SOCKET": os.environ["AGENTKEYS_MCP_SOCKET"]},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            listed = await session.call_tool("list_credentials", {})
            got = await session.call_tool("get_credential", {"service": service})
            refused = await session.call_tool("get_credential", {"service": "nope"})
            print(
                json.dumps(
                    {
                        "protocol_version": str(init.protocol_version),
                        "server": init.server_info.name,
                        "tools": sorted(t.name for t in tools.tools),
                        "listed": json.loads(listed.content[0].text),
                        "value": got.content[0].text,
                        "value_is_error": bool(got.is_error),
                        "refused_is_error": bool(refused.is_error),
                        "refused_text": refused.content[0].text,
                    }
                )
            )


asyncio.run(main())
