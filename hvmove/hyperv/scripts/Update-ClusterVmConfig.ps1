# Update-ClusterVmConfig: after a move changed a clustered VM's configuration location, refreshes
# the failover cluster's "Virtual Machine Configuration" resource of that VM on this node (its
# owner), with Update-ClusterVirtualMachineConfiguration, and reports the outcome. Move-VMStorage
# does this itself only inside its -AsJob thread, after the copy, where the call most likely fails
# or is lost once the WinRM session that started it is gone (review windows-scripts.md finding 4),
# and the WMI migration does not do it at all. A host that is not a cluster node (no root\MSCluster
# namespace) reports clustered = false and changes nothing.
# Prints one ClusterRefresh document.
param([string]$VmId)
$ErrorActionPreference = 'Stop'

$guid = [guid]::Empty
if (-not [guid]::TryParse($VmId, [ref]$guid)) { throw "VmId '$VmId' is not a valid VM id (a GUID)" }

$clusterName = $null
try {
    $cluster = Get-CimInstance -Namespace 'root\MSCluster' -ClassName MSCluster_Cluster -ErrorAction Stop |
        Select-Object -First 1
    if ($cluster -and $cluster.Name) { $clusterName = [string]$cluster.Name }
} catch {
    if ([string]$_.Exception.NativeErrorCode -ne 'InvalidNamespace') { throw }
}

$updated = $false
$detail = 'not a cluster node: nothing to refresh'
if ($clusterName) {
    try {
        Update-ClusterVirtualMachineConfiguration -VMId $guid -Cluster $clusterName -ErrorAction Stop | Out-Null
        $updated = $true
        $detail = "the configuration resource of VM $($guid.ToString()) in cluster $clusterName was refreshed"
    } catch {
        $detail = "Update-ClusterVirtualMachineConfiguration failed: $($_.Exception.Message)"
    }
}

$out = [pscustomobject]@{
    vm_id     = $guid.ToString()
    clustered = [bool]$clusterName
    updated   = $updated
    detail    = $detail
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
