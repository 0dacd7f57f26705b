"""The dashboard and explorer served by the node: server-rendered HTML (``render``), the market rebuilt from
contract events (``explorer``), and one small script and style sheet (``static``). No CDN, no build step."""
