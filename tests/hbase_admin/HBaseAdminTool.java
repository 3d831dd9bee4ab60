// Admin operations Thrift does not offer, run through HBase's own Java client (the tests'
// tool for forcing a region split; run with Java's source launcher, `java -cp CONF:LIB/* THIS_FILE`).
//
//   split TABLE          flush TABLE, then ask every region of it to split at its midpoint
//   major_compact TABLE  request a major compaction of every region of TABLE
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;

public class HBaseAdminTool {
  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: HBaseAdminTool split|major_compact TABLE");
      System.exit(2);
    }
    Configuration conf = HBaseConfiguration.create();
    TableName table = TableName.valueOf(args[1]);
    try (Connection connection = ConnectionFactory.createConnection(conf);
         Admin admin = connection.getAdmin()) {
      switch (args[0]) {
        case "split":
          admin.flush(table);  // a region splits at the midpoint of its largest store file
          admin.split(table);
          break;
        case "major_compact":
          admin.majorCompact(table);
          break;
        default:
          System.err.println("unknown operation " + args[0]);
          System.exit(2);
      }
    }
    System.out.println("ok " + args[0] + " " + table);
  }
}
