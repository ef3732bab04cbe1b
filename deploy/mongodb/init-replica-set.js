// docker-compose.yml's mongodb-init: make mongodb1..3 the replica set rs0, once, then wait
// until it has a primary (the services' majority writes need one).
try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  rs.initiate({
    _id: "rs0",
    members: [
      { _id: 0, host: "mongodb1:27017" },
      { _id: 1, host: "mongodb2:27017" },
      { _id: 2, host: "mongodb3:27017" },
    ],
  });
  print("replica set rs0 initiated");
}
for (let i = 0; i < 120; i++) {
  if (db.hello().isWritablePrimary || db.hello().primary) {
    print("primary: " + db.hello().primary);
    quit(0);
  }
  sleep(1000);
}
print("no primary after 120 s");
quit(1);
