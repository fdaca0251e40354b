/**
 * The load-test benchmark's target: as little work per request as Node allows,
 * so that the generators, not the target, are what is measured.
 *   GET /            200 {"ok":true}
 *   POST /users      201 {"id": n}
 *   WS /feed?user=n  a welcome, then every published note
 *   POST /publish    {"key": k}: one note {type:"note",key:k} to every subscriber; 200
 * Prints `listening <port>`; stops on SIGTERM.
 */
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

let users = 0;
const sockets = new Set();
const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end('{"ok":true}');
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.url === '/users') {
      res.writeHead(201, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ id: ++users }));
    }
    if (req.url === '/publish') {
      const { key } = JSON.parse(Buffer.concat(chunks).toString());
      const note = JSON.stringify({ type: 'note', key });
      for (const s of sockets) s.send(note);
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end('{"ok":true}');
    }
    res.writeHead(404).end();
  });
});
const wss = new WebSocketServer({ server, path: '/feed', perMessageDeflate: false });
wss.on('connection', (socket) => {
  sockets.add(socket);
  socket.on('close', () => sockets.delete(socket));
  socket.send('{"type":"welcome"}');
});
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
