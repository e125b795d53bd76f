// A police panel written with Node's `ws`, the second client implementation
// of the e2e tests (tests/e2e/test_24_panel_node.py drives it).
//
//   node panel_client.js URL COUNT [header|query]
//
// Connects with the token of $PANEL_TOKEN (Authorization: Bearer, or the
// access_token query parameter), prints one JSON line per event on stdout:
// {"event":"open"}, {"event":"message","data":<update>} for COUNT updates,
// {"event":"pong","data":"<text>"} after its own ping, then closes with 1000
// and prints {"event":"close","code":N}. Exits 1 on any error or after 10 s.
'use strict';

const WebSocket = require('ws');

const [url, countArg, mode = 'header'] = process.argv.slice(2);
const count = Number(countArg);
const token = process.env.PANEL_TOKEN;

function say(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

const giveUp = setTimeout(() => {
  say({ event: 'timeout' });
  process.exit(1);
}, 10000);

const ws = mode === 'query'
  ? new WebSocket(`${url}?access_token=${encodeURIComponent(token)}`)
  : new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });

let received = 0;

ws.on('open', () => say({ event: 'open' }));

ws.on('message', (data, isBinary) => {
  if (isBinary) {
    say({ event: 'error', message: 'binary frame from the server' });
    process.exit(1);
  }
  say({ event: 'message', data: JSON.parse(data.toString('utf8')) });
  received += 1;
  if (received === count) {
    ws.ping('node-ping');
  }
});

ws.on('pong', (data) => {
  say({ event: 'pong', data: data.toString('utf8') });
  ws.close(1000, 'done');
});

ws.on('close', (code) => {
  say({ event: 'close', code });
  clearTimeout(giveUp);
  process.exit(code === 1000 ? 0 : 1);
});

ws.on('unexpected-response', (req, res) => {
  say({ event: 'refused', status: res.statusCode });
  process.exit(1);
});

ws.on('error', (err) => {
  say({ event: 'error', message: err.message });
  process.exit(1);
});
