// HiveServer2 4.0.1 for the tests, in one JVM: the Thrift binary transport on 127.0.0.1
// only, an embedded metastore on Derby, a warehouse on the local file system and
// MapReduce's local job runner in this JVM, so that no Hadoop cluster is needed.
// Arguments: <dir> <port>. Stops on SIGTERM.
//
// The configuration is the hive-site.xml hive.sh writes into <dir>/conf, first on the
// class path. Sessions authenticate with SASL PLAIN against PasswordCheck below
// (hive.server2.authentication=CUSTOM): exactly one user and password, those of the
// system properties `operators.hive.user` / `operators.hive.password`.
//
// <dir>/data holds the metastore (Derby) and the warehouse, kept across restarts (delete
// it, stopped, for an empty Hive). The line "READY jdbc:hive2://127.0.0.1:<port>/default"
// on stdout says the server took a session over TCP with the right password, ran
// `select 1` in it, and refused a session with a wrong one.

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.concurrent.CountDownLatch;

import javax.security.sasl.AuthenticationException;

import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.util.ShutdownHookManager;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;
import org.apache.hive.service.server.HiveServer2;

public final class HiveServer {
    /** hive.server2.custom.authentication.class: the one user of the test server. */
    public static final class PasswordCheck implements PasswdAuthenticationProvider {
        private static final byte[] USER = bytes(System.getProperty("operators.hive.user", ""));
        private static final byte[] PASSWORD = bytes(System.getProperty("operators.hive.password", ""));

        private static byte[] bytes(String s) {
            return s.getBytes(StandardCharsets.UTF_8);
        }

        @Override
        public void Authenticate(String user, String password) throws AuthenticationException {
            // Constant-time comparisons, both always made; an empty configured password
            // refuses everyone.
            boolean userOk = MessageDigest.isEqual(bytes(user == null ? "" : user), USER);
            boolean passwordOk = MessageDigest.isEqual(bytes(password == null ? "" : password), PASSWORD);
            if (!userOk || !passwordOk || PASSWORD.length == 0) {
                throw new AuthenticationException("invalid user name or password for user [" + user + "]");
            }
        }
    }

    public static void main(String[] args) throws Exception {
        try {
            run(args);
        } catch (Throwable e) {
            // HiveServer2's threads would keep a half-started JVM alive: exit, so that
            // hive.sh sees the failure at once.
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: HiveServer <dir> <port>");
            System.exit(2);
        }
        Path dir = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);
        String url = "jdbc:hive2://127.0.0.1:" + port + "/default";

        HiveConf conf = new HiveConf();
        if (conf.getIntVar(HiveConf.ConfVars.HIVE_SERVER2_THRIFT_PORT) != port) {
            throw new IllegalStateException("hive-site.xml (" + HiveConf.getHiveSiteLocation()
                + ") does not set hive.server2.thrift.port=" + port);
        }

        CountDownLatch stopped = new CountDownLatch(1);
        // After HiveServer2's own hook (priority 1000) and the FileSystem cache's (10):
        // Derby writes its checkpoint, so the next start need not recover from its log.
        ShutdownHookManager.get().addShutdownHook(() -> {
            try {
                DriverManager.getConnection("jdbc:derby:;shutdown=true");
            } catch (SQLException e) {
                // XJ015: the normal answer to a system shutdown.
                if (!"XJ015".equals(e.getSQLState())) {
                    e.printStackTrace();
                }
            }
            stopped.countDown();
        }, 1);

        HiveServer2 server = new HiveServer2();
        server.init(conf);
        server.start();

        probe(url);
        System.out.println("READY " + url);
        System.out.flush();
        stopped.await();
    }

    /** A session as the configured user that runs a query, and one refused. */
    private static void probe(String url) throws Exception {
        String user = System.getProperty("operators.hive.user", "");
        String password = System.getProperty("operators.hive.password", "");
        Class.forName("org.apache.hive.jdbc.HiveDriver");
        try (Connection c = DriverManager.getConnection(url, user, password);
             Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("select 1")) {
            if (!rs.next() || rs.getInt(1) != 1) {
                throw new IllegalStateException("`select 1` did not answer 1");
            }
        }
        try (Connection c = DriverManager.getConnection(url, user, password + "-wrong")) {
            throw new IllegalStateException("a session with a wrong password was accepted");
        } catch (SQLException expected) {
            // Refused, as it must be.
        }
    }
}
