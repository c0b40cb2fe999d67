# Get-VolumeInfo: capacity, free space and kind (local, csv, smb) of the volume or share that holds
# each path. A path that does not exist yet is resolved through its nearest existing parent.
# Local and CSV volumes are read with Get-Volume -FilePath; SMB shares (UNC paths) with
# GetDiskFreeSpaceEx, which counts the caller's quota (and needs delegation to reach the share
# from a remote session).
# With no Path, one entry per local volume with a drive letter and per cluster shared volume
# (Win32_Volume: its mount point, e.g. C:\ClusterStorage\Volume1\).
# Prints one VolumeReport document with one entry per path, in order; a path this host cannot
# resolve (no part of it exists, access denied, a CSV that is not mounted here) is an entry with
# its error, never a failure of the whole call.
param([string[]]$Path = @())
$ErrorActionPreference = 'Stop'

if (-not ('HvMove.NativeVolume' -as [type])) {
    Add-Type -Namespace HvMove -Name NativeVolume -MemberDefinition @'
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetVolumePathNameW(string lpszFileName, System.Text.StringBuilder lpszVolumePathName, uint cchBufferLength);
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetDiskFreeSpaceExW(string lpDirectoryName, out ulong lpFreeBytesAvailable, out ulong lpTotalNumberOfBytes, out ulong lpTotalNumberOfFreeBytes);
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetVolumeInformationW(string lpRootPathName, System.Text.StringBuilder lpVolumeNameBuffer, uint nVolumeNameSize, out uint lpVolumeSerialNumber, out uint lpMaximumComponentLength, out uint lpFileSystemFlags, System.Text.StringBuilder lpFileSystemNameBuffer, uint nFileSystemNameSize);
'@
}

# Test-Path writes an error when access is denied or the path is too long (PowerShell's
# FileSystemProvider.ItemExists: ItemExistsUnauthorizedAccessError, ItemExistsPathTooLongError)
# and then says False; with $ErrorActionPreference = 'Stop' that error ends the script. So every
# existence test has three answers: 'exists', 'absent', or 'unreachable: <why>'.
function Get-HvmPathState([string]$path) {
    $problems = $null
    $found = Test-Path -LiteralPath $path -ErrorAction SilentlyContinue -ErrorVariable problems
    if ($problems -and @($problems).Count -gt 0) { return 'unreachable: ' + [string]@($problems)[0].Exception.Message }
    if ($found) { return 'exists' }
    return 'absent'
}


function Test-HvmAbsolutePath([string]$path) {
    return ($path -match '^[A-Za-z]:\\' -or $path -match '^\\\\[^\\]+\\[^\\]+')
}

# The path itself when it exists, else its nearest existing parent, else $null.
function Get-HvmExistingAncestor([string]$path) {
    $p = $path
    for ($i = 0; $i -lt 256 -and $p; $i++) {
        $state = Get-HvmPathState $p
        if ($state -eq 'exists') { return $p }
        if ($state -ne 'absent') { throw "Path '$path' cannot be reached from this host: $state" }
        $parent = [System.IO.Path]::GetDirectoryName($p)
        if (-not $parent -or $parent -eq $p) { return $null }
        $p = $parent
    }
    return $null
}

# The root of the volume or share holding an existing path, with a trailing backslash:
# 'D:\', 'C:\ClusterStorage\Volume1\', '\\fs01\share\'.
function Get-HvmVolumeRoot([string]$existing) {
    $buffer = [System.Text.StringBuilder]::new(1024)
    $root = ''
    if ([HvMove.NativeVolume]::GetVolumePathNameW($existing, $buffer, [uint32]1024)) {
        $root = $buffer.ToString()
    }
    if (-not $root) { $root = [System.IO.Path]::GetPathRoot($existing) }
    if (-not $root.EndsWith('\')) { $root += '\' }
    return $root
}

function Get-HvmVolumeInfo([string]$path) {
    if (-not (Test-HvmAbsolutePath $path)) { throw "Path '$path' is not an absolute path" }
    $existing = Get-HvmExistingAncestor $path
    if (-not $existing) {
        throw "Path '$path' is not on a volume or share this host can reach (no part of it exists)"
    }
    $root = Get-HvmVolumeRoot $existing
    $isUnc = $root.StartsWith('\\')
    # a path under a cluster shared volume that is not mounted here (a typo, or a CSV of another
    # cluster) must not pass for the system volume that holds C:\ClusterStorage
    if ($path -match '^([A-Za-z]:\\ClusterStorage\\[^\\]+)' -and -not $root.StartsWith($Matches[1] + '\', [System.StringComparison]::OrdinalIgnoreCase)) {
        throw "Path '$path' is on the cluster shared volume '$($Matches[1])', which is not mounted on this host"
    }

    $volume = $null
    if (-not $isUnc) {
        try {
            $volume = Get-Volume -FilePath $existing -ErrorAction Stop | Select-Object -First 1
        } catch {
            Write-Warning -Message "Get-Volume -FilePath '$existing' failed, using GetDiskFreeSpaceEx: $($_.Exception.Message)"
            $volume = $null
        }
    }
    if ($volume) {
        $capacity = [int64]$volume.Size
        $free = [int64]$volume.SizeRemaining
        $fileSystem = [string]$volume.FileSystem
        $label = [string]$volume.FileSystemLabel
    } else {
        $available = [uint64]0
        $total = [uint64]0
        $totalFree = [uint64]0
        if (-not [HvMove.NativeVolume]::GetDiskFreeSpaceExW($root, [ref]$available, [ref]$total, [ref]$totalFree)) {
            $code = [System.Runtime.InteropServices.Marshal]::GetLastWin32Error()
            $reason = [System.ComponentModel.Win32Exception]::new($code).Message
            throw "Free space of '$root' could not be read: $reason ($code)"
        }
        $capacity = [int64]$total
        $free = [int64]$available
        $nameBuffer = [System.Text.StringBuilder]::new(261)
        $fsBuffer = [System.Text.StringBuilder]::new(261)
        $serial = [uint32]0
        $maxComponent = [uint32]0
        $flags = [uint32]0
        $fileSystem = ''
        $label = ''
        if ([HvMove.NativeVolume]::GetVolumeInformationW($root, $nameBuffer, [uint32]261, [ref]$serial, [ref]$maxComponent, [ref]$flags, $fsBuffer, [uint32]261)) {
            $fileSystem = $fsBuffer.ToString()
            $label = $nameBuffer.ToString()
        }
    }

    $kind = 'local'
    if ($isUnc) {
        $kind = 'smb'
    } elseif ($fileSystem -like 'CSVFS*' -or $root -like '*\ClusterStorage\*') {
        $kind = 'csv'
    }
    return [pscustomobject]@{
        path        = $path
        exists      = ((Get-HvmPathState $path) -eq 'exists')
        volume      = $root
        kind        = $kind
        file_system = $fileSystem
        capacity    = $capacity
        free        = $free
        label       = $label
        error       = ''
    }
}

$paths = @()
if ($null -ne $Path) { $paths = @($Path) }

if ($paths.Count -eq 0) {
    # every lettered volume and every CSV mount point (Win32_Volume.Name is the mount path)
    $paths = @(
        Get-CimInstance -ClassName Win32_Volume |
            Where-Object { $_.DriveLetter -or ([string]$_.Name) -like '?:\ClusterStorage\*' } |
            ForEach-Object { [string]$_.Name }
    )
}

$volumes = [System.Collections.Generic.List[object]]::new()
foreach ($p in $paths) {
    try {
        $volumes.Add((Get-HvmVolumeInfo ([string]$p)))
    } catch {
        $failed = [pscustomobject]@{
            path        = [string]$p
            exists      = $false
            volume      = ''
            kind        = 'local'
            file_system = ''
            capacity    = 0
            free        = 0
            label       = ''
            error       = $_.Exception.Message
        }
        $volumes.Add($failed)
    }
}

$out = [pscustomobject]@{
    volumes = $volumes.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
