# Get-HostFacts: what a storage-move plan needs to know about this Hyper-V host.
# Prints one HostFacts document: computer name, OS version and caption, MaximumStorageMigrations,
# the default VHD and VM folders, the failover cluster name (null when the host is not clustered)
# with the names of its nodes (cleanup asks each of them before deleting on a cluster shared volume)
# and how many storage migrations (Msvm_MigrationJob, JobType 307, JobState 2..6) are running, and
# whether a storage migration can keep every source copy (keep_source_supported: the WMI
# migration settings have AvoidRemovingVHDs; keep_source_detail says why not).
param()
$ErrorActionPreference = 'Stop'

# Whether this host's Msvm_VirtualSystemMigrationSettingData has AvoidRemovingVHDs ("Do not remove
# any VHDs during the migration, i.e. VHDs on the source in success and VHDs on the destination in
# failure", learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemmigrationsettingdata).
# The page does not say from which build it exists, so the class is asked, never the OS version.
function Test-HvmAvoidRemovingVhds {
    try {
        $class = Get-CimClass -Namespace 'root\virtualization\v2' -ClassName Msvm_VirtualSystemMigrationSettingData -ErrorAction Stop
        $found = @($class.CimClassProperties | Where-Object { $_.Name -eq 'AvoidRemovingVHDs' })
        if ($found.Count -gt 0) { return '' }
        return 'Msvm_VirtualSystemMigrationSettingData has no AvoidRemovingVHDs property on this host'
    } catch {
        return 'Msvm_VirtualSystemMigrationSettingData could not be read: ' + $_.Exception.Message
    }
}


$vmHost = Get-VMHost
$os = Get-CimInstance -ClassName Win32_OperatingSystem | Select-Object -First 1

$name = [string]$os.CSName
if (-not $name) { $name = [string]$env:COMPUTERNAME }

# The FailoverClusters module may be absent; the MSCluster WMI namespace exists only on cluster
# nodes, so an "invalid namespace" error simply means "not clustered".
$clusterName = $null
$clusterNodes = @()
try {
    $cluster = Get-CimInstance -Namespace 'root\MSCluster' -ClassName MSCluster_Cluster -ErrorAction Stop |
        Select-Object -First 1
    if ($cluster -and $cluster.Name) { $clusterName = [string]$cluster.Name }
} catch {
    $clusterName = $null
    if ([string]$_.Exception.NativeErrorCode -ne 'InvalidNamespace') {
        Write-Warning -Message "Cluster membership could not be read: $($_.Exception.Message)"
    }
}
# On their own: a cluster whose nodes cannot be listed stays a cluster with no known nodes, and
# cleanup then deletes nothing on its shared volumes.
if ($clusterName) {
    try {
        $clusterNodes = @(
            Get-CimInstance -Namespace 'root\MSCluster' -ClassName MSCluster_Node -ErrorAction Stop |
                ForEach-Object { [string]$_.Name }
        )
    } catch {
        $clusterNodes = @()
        Write-Warning -Message "Cluster nodes could not be read: $($_.Exception.Message)"
    }
}

$running = @(
    Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_MigrationJob |
        Where-Object { [int]$_.JobType -eq 307 -and [int]$_.JobState -ge 2 -and [int]$_.JobState -le 6 }
).Count

$keepSourceDetail = Test-HvmAvoidRemovingVhds

$out = [pscustomobject]@{
    name                       = $name
    os_version                 = [string]$os.Version
    os_caption                 = [string]$os.Caption
    maximum_storage_migrations = [int64]$vmHost.MaximumStorageMigrations
    virtual_hard_disk_path     = [string]$vmHost.VirtualHardDiskPath
    virtual_machine_path       = [string]$vmHost.VirtualMachinePath
    cluster_name               = $clusterName
    cluster_nodes              = @($clusterNodes)
    running_storage_moves      = [int]$running
    keep_source_supported      = (-not $keepSourceDetail)
    keep_source_detail         = [string]$keepSourceDetail
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
