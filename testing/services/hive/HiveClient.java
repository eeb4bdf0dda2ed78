// A small HiveServer2 client over Hive's own JDBC driver (hive.sh: the readiness check and
// `hive.sh sql`). Connects to $HIVE_URL as $HIVE_USER / $HIVE_PASSWORD and runs each
// argument as one statement, in order, in one session. A statement with a result set
// prints its rows, one a line, columns separated by tabs (NULL for null). Exits 1 with the
// server's message on the first failure (a refused login included).

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public final class HiveClient {
    public static void main(String[] args) throws Exception {
        String url = env("HIVE_URL");
        String user = env("HIVE_USER");
        String password = env("HIVE_PASSWORD");
        Class.forName("org.apache.hive.jdbc.HiveDriver");
        try (Connection c = DriverManager.getConnection(url, user, password);
             Statement s = c.createStatement()) {
            for (String sql : args) {
                if (s.execute(sql)) {
                    try (ResultSet rs = s.getResultSet()) {
                        int n = rs.getMetaData().getColumnCount();
                        StringBuilder line = new StringBuilder();
                        while (rs.next()) {
                            line.setLength(0);
                            for (int i = 1; i <= n; i++) {
                                if (i > 1) {
                                    line.append('\t');
                                }
                                String v = rs.getString(i);
                                line.append(v == null ? "NULL" : v);
                            }
                            System.out.println(line);
                        }
                    }
                }
            }
        } catch (SQLException e) {
            System.err.println("HiveClient: " + e.getMessage());
            System.exit(1);
        }
    }

    private static String env(String name) {
        String v = System.getenv(name);
        if (v == null) {
            System.err.println("HiveClient: " + name + " is not set");
            System.exit(2);
        }
        return v;
    }
}
