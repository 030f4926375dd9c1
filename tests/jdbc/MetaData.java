// What JDBC tools (DBeaver, Hibernate, Liquibase) ask a database about its tables, through
// pgjdbc's DatabaseMetaData, printed one line per row so that tests/test_jdbc.py can check it.
//
// Usage: java -cp postgresql.jar:. MetaData <jdbc-url> <user> <password> <table>...
// Each line is "<call>|<field>=<value>|...". A failure prints "ERROR|<SQLState>|<message>" and
// exits with status 1.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class MetaData {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("product|name=" + md.getDatabaseProductName()
                + "|version=" + md.getDatabaseProductVersion());
            print("schemas", md.getSchemas(), "TABLE_SCHEM");
            print("type_info", md.getTypeInfo(), "TYPE_NAME", "DATA_TYPE");
            print("functions", md.getFunctions(null, "pg_catalog", "upper"), "FUNCTION_SCHEM", "FUNCTION_NAME");
            System.out.println("keywords|sql=" + md.getSQLKeywords());
            for (int i = 3; i < args.length; i++) {
                String table = args[i];
                print("tables", md.getTables(null, "public", table, new String[] {"TABLE", "VIEW"}),
                      "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE");
                print("columns", md.getColumns(null, "public", table, "%"),
                      "TABLE_NAME", "COLUMN_NAME", "ORDINAL_POSITION", "TYPE_NAME", "DATA_TYPE",
                      "COLUMN_SIZE", "DECIMAL_DIGITS", "IS_NULLABLE", "COLUMN_DEF", "IS_AUTOINCREMENT");
                print("primary_keys", md.getPrimaryKeys(null, "public", table),
                      "TABLE_NAME", "COLUMN_NAME", "KEY_SEQ", "PK_NAME");
                print("index_info", md.getIndexInfo(null, "public", table, false, false),
                      "TABLE_NAME", "NON_UNIQUE", "INDEX_NAME", "ORDINAL_POSITION", "COLUMN_NAME",
                      "ASC_OR_DESC");
                print("imported_keys", md.getImportedKeys(null, "public", table),
                      "PKTABLE_NAME", "PKCOLUMN_NAME", "FKTABLE_NAME", "FKCOLUMN_NAME", "KEY_SEQ", "FK_NAME");
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*) FROM " + args[3])) {
                rs.next();
                System.out.println("count|" + args[3] + "=" + rs.getLong(1));
            }
        } catch (SQLException e) {
            System.out.println("ERROR|" + e.getSQLState() + "|" + e.getMessage().replace('\n', ' '));
            System.exit(1);
        }
    }

    private static void print(String call, ResultSet rs, String... fields) throws SQLException {
        try (rs) {
            while (rs.next()) {
                StringBuilder line = new StringBuilder(call);
                for (String f : fields) {
                    line.append('|').append(f).append('=').append(rs.getString(f));
                }
                System.out.println(line);
            }
        }
    }
}
