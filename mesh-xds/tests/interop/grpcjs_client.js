// gRPC's Node.js xDS client (grpc-js with grpc-js-xds) calling echo.Echo/Say on xds:/// targets.
//
// The bootstrap comes from GRPC_XDS_BOOTSTRAP_CONFIG, set by the Rust test that starts this
// script; the packages from target/node (NODE_PATH, see scripts/node-env). Each target is
// called in turn, --calls times (the first call waits for xDS to resolve it). Prints one JSON
// object: calls per status name and a sample message per failing status. Exits 0 unless the
// script itself fails (the statuses are the result).
//
//     node grpcjs_client.js xds:///echo.default.svc.cluster.local:50051 --calls 3 --timeout 5

'use strict';

const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();

function parseArgs(argv) {
  const args = { targets: [], calls: 1, timeout: 10 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--calls') args.calls = Number(argv[++i]);
    else if (argv[i] === '--timeout') args.timeout = Number(argv[++i]);
    else args.targets.push(argv[i]);
  }
  return args;
}

// EchoRequest { message = 1 } with a short message.
function encodeRequest(message) {
  const data = Buffer.from(message);
  return Buffer.concat([Buffer.from([0x0a, data.length]), data]);
}

function call(client, args, first) {
  return new Promise((resolve) => {
    const metadata = new grpc.Metadata();
    metadata.setOptions({ waitForReady: first });
    const deadline = new Date(Date.now() + args.timeout * 1000);
    client.makeUnaryRequest(
      '/echo.Echo/Say',
      (b) => b,
      (b) => b,
      encodeRequest('hello'),
      metadata,
      { deadline },
      (error) => resolve(error),
    );
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const byStatus = {};
  const errors = {};
  for (const target of args.targets) {
    const client = new grpc.Client(target, grpc.credentials.createInsecure());
    for (let n = 0; n < args.calls; n++) {
      const error = await call(client, args, n === 0);
      const status = error ? grpc.status[error.code] : 'OK';
      if (error && !(status in errors)) errors[status] = error.details;
      byStatus[status] = (byStatus[status] || 0) + 1;
    }
    client.close();
  }
  process.stdout.write(JSON.stringify({ by_status: byStatus, errors }) + '\n');
  // The xDS client keeps its stream open; the result is out.
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
