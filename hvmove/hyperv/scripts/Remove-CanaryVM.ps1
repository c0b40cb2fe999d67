# Remove-CanaryVM: removes what `hvmove canary` made, and only that. A VM is a canary's when its
# name starts with 'hvmove-canary-' and every file it uses lies in a folder of the same name that
# holds the marker file (hvmove-canary.marker) naming it; a folder is a canary's when it is named
# 'hvmove-canary-<id>', sits directly in one of the Root folders and holds that marker. Such a VM
# is turned off and removed (Remove-VM keeps its files), then such folders are deleted with what
# is in them, unless a VM on this host still uses something inside. CanaryId limits it to one
# canary; empty means every leftover. A VM whose storage migration is running is kept: the
# caller stops the move first. Prints one CanaryRemoval document.
param([string[]]$Root = @(), [string]$CanaryId = '')
$ErrorActionPreference = 'Stop'

$prefix = 'hvmove-canary-'
if ($CanaryId -and $CanaryId -notmatch '^[a-z0-9]+$') { throw "CanaryId '$CanaryId' is not a canary id" }

function Get-HvmMarkedFolder([string]$path) {
    # The nearest folder named hvmove-canary-<id> above (or at) a path, when its marker names it.
    $current = $path.TrimEnd('\')
    while ($current) {
        $leaf = [System.IO.Path]::GetFileName($current)
        if ($leaf -match '^hvmove-canary-[a-z0-9]+$') {
            $marker = [System.IO.Path]::Combine($current, 'hvmove-canary.marker')
            if ([System.IO.File]::Exists($marker)) {
                $text = [System.IO.File]::ReadAllText($marker)
                if ($text.Contains('"' + $leaf.Substring($prefix.Length) + '"')) { return $current }
            }
            return $null
        }
        $current = [System.IO.Path]::GetDirectoryName($current)
    }
    return $null
}

function Get-HvmVmPaths($vm) {
    $paths = [System.Collections.Generic.List[string]]::new()
    $paths.Add([string]$vm.ConfigurationLocation)
    $paths.Add([string]$vm.SnapshotFileLocation)
    $paths.Add([string]$vm.SmartPagingFilePath)
    foreach ($d in @(Get-VMHardDiskDrive -VM $vm)) {
        if ($d.Path) { $paths.Add([string]$d.Path) }
    }
    return $paths
}

$removedVms = [System.Collections.Generic.List[object]]::new()
$kept = [System.Collections.Generic.List[object]]::new()
$migrating = @(
    Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName Msvm_MigrationJob |
        Where-Object { [int]$_.JobType -eq 307 -and [int]$_.JobState -ge 2 -and [int]$_.JobState -le 6 } |
        ForEach-Object { ([string]$_.VirtualSystemName).ToLowerInvariant() }
)
foreach ($vm in @(Get-VM)) {
    $vmName = [string]$vm.Name
    if (-not $vmName.StartsWith($prefix)) { continue }
    if ($CanaryId -and $vmName -ne ($prefix + $CanaryId)) { continue }
    $id = ([string]$vm.Id).ToLowerInvariant()
    if ($migrating -contains $id) {
        $kept.Add([pscustomobject]@{ path = $id; reason = "VM '$vmName' is being moved; stop the move first" })
        continue
    }
    $unmarked = @(Get-HvmVmPaths $vm | Where-Object { $_ -and -not (Get-HvmMarkedFolder $_) })
    if ($unmarked.Count -gt 0) {
        $kept.Add([pscustomobject]@{ path = $id; reason = "VM '$vmName' uses '$($unmarked[0])', which is not in a marked canary folder" })
        continue
    }
    if ([string]$vm.State -ne 'Off') { Stop-VM -VM $vm -TurnOff -Force }
    Remove-VM -VM $vm -Force
    $removedVms.Add([pscustomobject]@{ path = $id; reason = $vmName })
}

# What the remaining VMs use: a canary folder holding any of it is kept.
$inUse = [System.Collections.Generic.List[string]]::new()
foreach ($vm in @(Get-VM)) {
    foreach ($p in Get-HvmVmPaths $vm) { if ($p) { $inUse.Add($p.TrimEnd('\').ToLowerInvariant()) } }
}
$removedFolders = [System.Collections.Generic.List[string]]::new()
foreach ($r in @($Root)) {
    $rootText = [string]$r
    if (-not [System.IO.Directory]::Exists($rootText)) { continue }
    foreach ($folder in [System.IO.Directory]::GetDirectories($rootText, $prefix + '*')) {
        $leaf = [System.IO.Path]::GetFileName($folder)
        if ($CanaryId -and $leaf -ne ($prefix + $CanaryId)) { continue }
        if (-not (Get-HvmMarkedFolder $folder)) {
            $kept.Add([pscustomobject]@{ path = $folder; reason = 'no marker file naming this canary' })
            continue
        }
        $key = $folder.ToLowerInvariant()
        $users = @($inUse | Where-Object { $_ -eq $key -or $_.StartsWith($key + '\') })
        if ($users.Count -gt 0) {
            $kept.Add([pscustomobject]@{ path = $folder; reason = "a VM still uses '$($users[0])'" })
            continue
        }
        Remove-Item -LiteralPath $folder -Recurse -Force -Confirm:$false
        $removedFolders.Add($folder)
    }
}

$out = [pscustomobject]@{
    vms_removed     = $removedVms.ToArray()
    folders_removed = $removedFolders.ToArray()
    kept            = $kept.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
